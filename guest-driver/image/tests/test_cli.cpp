// blkrig-mkdisk's exit codes and report, and raw disks.
#include "helpers.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace blkrig::image {
namespace {

using blkrig::TempDir;

std::string mkdisk() {
    const char* p = std::getenv("BLKRIG_MKDISK");
    return p != nullptr ? p : "blkrig-mkdisk";
}

std::string write_spec(const TempDir& dir, const std::string& text) {
    const std::string path = dir.file("spec.json");
    std::ofstream(path) << text;
    return path;
}

TEST(Cli, BuildsAndReports) {
    TempDir dir;
    const std::string spec = write_spec(dir, R"({"fs": "vfat", "size_bytes": 16777216, "cluster_bytes": 1024,
        "files": [{"path": "/f1.bin", "size_bytes": 10000, "layout": "fragmented", "extents": 2}]})");
    const ToolResult r =
        run_tool({mkdisk(), spec, "--out", dir.file("d.img"), "--extents", dir.file("x.json")});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::ifstream in(dir.file("x.json"));
    const auto j = nlohmann::json::parse(in);
    EXPECT_EQ(j["fs"], "vfat");
    EXPECT_EQ(j["size_bytes"], 16777216);
    EXPECT_EQ(j["sector_bytes"], 512);
    EXPECT_EQ(j["geometry"]["cluster_bytes"], 1024);
    EXPECT_TRUE(j["geometry"].contains("data_start_sector"));
    ASSERT_EQ(j["files"].size(), 1u);
    EXPECT_EQ(j["files"][0]["path"], "/f1.bin");
    EXPECT_EQ(j["files"][0]["size_bytes"], 10000);
    ASSERT_EQ(j["files"][0]["extents"].size(), 2u);
    EXPECT_EQ(j["files"][0]["extents"][1]["file_offset"], 5120);
    EXPECT_TRUE(j["files"][0]["extents"][0].contains("sector"));
    EXPECT_TRUE(j["files"][0]["extents"][0].contains("sectors"));
}

TEST(Cli, BadSpecExitsTwoNamingTheField) {
    TempDir dir;
    const ToolResult r = run_tool({mkdisk(), write_spec(dir, R"({"fs": "vfat", "size_bytes": 1048576,
        "files": [{"path": "/f", "size_bytes": 1, "layout": "fragmented", "extents": 1}]})"),
                                   "--out", dir.file("d.img")});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("files[0].extents"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir.file("d.img")));
    EXPECT_EQ(run_tool({mkdisk(), dir.file("missing.json"), "--out", dir.file("d.img")}).exit_code, 2);
    EXPECT_EQ(run_tool({mkdisk(), dir.file("spec.json")}).exit_code, 2);  // no --out
}

TEST(Cli, ToolFailureExitsOneWithTheToolsMessage) {
    TempDir dir;
    const ToolResult r = run_tool({mkdisk(), write_spec(dir, R"({"fs": "ext4", "size_bytes": 8192})"), "--out",
                                   dir.file("d.img")});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("mke2fs"), std::string::npos) << r.err;
}

TEST(Raw, FilesAtPageBoundaries) {
    TempDir dir;
    const auto b = test::build(dir, R"({"fs": "raw", "size_bytes": 1048576,
        "files": [{"path": "/a", "size_bytes": 5000, "content": "pattern"}, {"path": "/b", "size_bytes": 3000, "seed": 8}]})");
    const auto img = test::read_bytes(b.image);
    ASSERT_EQ(img.size(), 1048576u);
    const auto& x = b.report.files;
    EXPECT_EQ(x[0].extents, (std::vector<Extent>{{0, 0, 10}}));
    EXPECT_EQ(x[1].extents, (std::vector<Extent>{{0, 16, 6}}));
    EXPECT_EQ(std::vector<uint8_t>(img.begin(), img.begin() + 5000), test::expected_content(b.spec.files[0]));
    EXPECT_EQ(std::vector<uint8_t>(img.begin() + 8192, img.begin() + 8192 + 3000), test::expected_content(b.spec.files[1]));
}

}  // namespace
}  // namespace blkrig::image
