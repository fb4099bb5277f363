// blkrig-mkdisk's exit codes and report, and raw disks.
#include "helpers.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

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

// A run stopped while its disk is built sends SIGTERM: the scratch folder
// (made where TMPDIR says) and the half-made image go, and the exit says why.
TEST(Cli, SigtermMidBuildLeavesNothing) {
    TempDir dir, tmp;
    const std::string spec = write_spec(dir, R"({"fs": "vfat", "size_bytes": 1073741824,
        "files": [{"path": "/big.bin", "size_bytes": 805306368, "content": "random", "seed": 3}]})");
    const std::string img = dir.file("d.img");
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::setenv("TMPDIR", tmp.path().c_str(), 1);
        const std::string prog = mkdisk();
        ::execlp(prog.c_str(), prog.c_str(), spec.c_str(), "--out", img.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    auto scratch_folders = [&] {
        size_t n = 0;
        for (const auto& e : std::filesystem::directory_iterator(tmp.path()))
            n += e.path().filename().string().rfind("blkrig-mkdisk-", 0) == 0;
        return n;
    };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (scratch_folders() == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_EQ(scratch_folders(), 1u) << "blkrig-mkdisk made no scratch folder in TMPDIR";
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ::kill(pid, SIGTERM);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "ended by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
    EXPECT_EQ(scratch_folders(), 0u);
    EXPECT_FALSE(std::filesystem::exists(img));
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
