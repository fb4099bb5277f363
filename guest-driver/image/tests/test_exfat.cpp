// exFAT images: written by our ExfatWriter, judged by fsck.exfat (inside
// build_image) and read back through the pure parser.
#include "fat.hpp"
#include "helpers.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

namespace blkrig::image {
namespace {

using blkrig::TempDir;

class Exfat : public ::testing::TestWithParam<uint32_t> {};

TEST_P(Exfat, FilesFoldersAndFragments) {
    const uint32_t cluster = GetParam();
    TempDir dir;
    std::string files;
    // Enough entries to make the root and a folder grow past one cluster.
    for (int k = 0; k < 40; ++k)
        files += fmt::format(R"({{"path": "/many/file_with_a_longish_name_{:02}.dat", "size_bytes": {}, "seed": {}}},)",
                             k, 100 + k, k);
    const auto b = test::build(dir, fmt::format(R"({{"fs": "exfat", "size_bytes": 33554432, "cluster_bytes": {},
        "files": [{}
          {{"path": "/big.bin", "size_bytes": 1048576, "seed": 5}},
          {{"path": "/frag.bin", "size_bytes": 70000, "content": "pattern", "layout": "fragmented", "extents": 5}},
          {{"path": "/a/b/tail.bin", "size_bytes": 5000, "content": "zero"}},
          {{"path": "/empty", "size_bytes": 0}}]}})",
                                                cluster, files));
    const auto bytes = test::read_bytes(b.image);
    const FatVolume v = parse_fat_volume(bytes);
    EXPECT_TRUE(v.exfat);
    EXPECT_EQ(v.cluster_bytes, cluster);
    EXPECT_EQ(b.report.geometry.fs, FsKind::exfat);
    EXPECT_EQ(b.report.geometry.data_start_sector * 512, v.heap_offset);
    for (size_t i = 0; i < b.spec.files.size(); ++i) {
        const FileSpec& f = b.spec.files[i];
        SCOPED_TRACE(f.path);
        EXPECT_EQ(b.report.files[i].size_bytes, f.size_bytes);
        EXPECT_EQ(fat_read_file(bytes, f.path), test::expected_content(f));
    }
    const size_t big = b.spec.files.size() - 4;
    EXPECT_EQ(b.report.files[big].extents.size(), 1u);
    EXPECT_EQ(b.report.files[big + 1].extents.size(), 5u);
    // Contiguous files are NoFatChain, as exFAT drivers write them.
    EXPECT_TRUE(fat_lookup(bytes, v, "/BIG.BIN")->no_fat_chain);
    EXPECT_FALSE(fat_lookup(bytes, v, "/frag.bin")->no_fat_chain);
    EXPECT_EQ(fat_list(bytes, v, fat_lookup(bytes, v, "/many")).size(), 40u);
}

INSTANTIATE_TEST_SUITE_P(Clusters, Exfat, ::testing::Values(512u, 4096u));

TEST(ExfatChecks, BadChecksumIsAFormatError) {
    TempDir dir;
    const auto b = test::build(dir, R"({"fs": "exfat", "size_bytes": 16777216,
        "files": [{"path": "/f.bin", "size_bytes": 3000}]})");
    auto bytes = test::read_bytes(b.image);
    const FatVolume v = parse_fat_volume(bytes);
    const auto e = fat_lookup(bytes, v, "/f.bin");
    ASSERT_TRUE(e);
    bytes[e->entry_offset + 32 + 4] ^= 1;  // the name hash, under the set checksum
    EXPECT_THROW(fat_lookup(bytes, v, "/f.bin"), FormatError);
}

}  // namespace
}  // namespace blkrig::image
