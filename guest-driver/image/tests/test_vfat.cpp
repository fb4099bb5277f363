// vfat images, checked against mtools: mshowfat for the cluster runs, minfo
// for where clusters start, mcopy for the bytes.
#include "fat.hpp"
#include "helpers.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

namespace blkrig::image {
namespace {

using blkrig::TempDir;

struct FatCase {
    const char* name;
    unsigned bits;
    uint64_t size;
    uint32_t cluster;
};

class Vfat : public ::testing::TestWithParam<FatCase> {};

std::string spec_for(const FatCase& c) {
    return fmt::format(R"({{"fs": "vfat", "size_bytes": {}, "fat_bits": {}, "cluster_bytes": {}, "files": [
        {{"path": "/big.bin", "size_bytes": 1048576, "content": "random", "seed": 7}},
        {{"path": "/frag.bin", "size_bytes": 70000, "content": "pattern", "layout": "fragmented", "extents": 4}},
        {{"path": "/Folder/split.bin", "size_bytes": 65536, "layout": "fragmented", "split_at": [{}], "seed": 2}},
        {{"path": "/Folder/deeper/a_long_name_for_tail.bin", "size_bytes": 5000, "content": "zero"}},
        {{"path": "/empty.bin", "size_bytes": 0}},
        {{"path": "/after.bin", "size_bytes": 20480, "seed": 9}}]}})",
                       c.size, c.bits, c.cluster, 5 * c.cluster);
}

TEST_P(Vfat, LayoutMatchesMtoolsAndContentReadsBack) {
    const FatCase& c = GetParam();
    TempDir dir;
    const auto b = test::build(dir, spec_for(c));
    const auto& g = b.report.geometry;
    EXPECT_EQ(g.fs, FsKind::vfat);
    EXPECT_EQ(g.fat_bits, c.bits);
    EXPECT_EQ(g.alloc_bytes, c.cluster);
    const test::MinfoGeometry mg = test::minfo_geometry(b.image);
    EXPECT_EQ(g.data_start_sector, mg.data_start);
    EXPECT_EQ(uint64_t(g.alloc_bytes) / 512, mg.sectors_per_cluster);

    ASSERT_EQ(b.report.files.size(), b.spec.files.size());
    for (size_t i = 0; i < b.spec.files.size(); ++i) {
        const FileSpec& f = b.spec.files[i];
        const FileExtents& fx = b.report.files[i];
        SCOPED_TRACE(f.path);
        EXPECT_EQ(fx.path, f.path);
        // (e) the exact size, tail included
        EXPECT_EQ(fx.size_bytes, f.size_bytes);
        // (a) our runs are mshowfat's, in sectors by minfo's geometry
        std::vector<Extent> from_mtools;
        uint64_t off = 0;
        if (f.size_bytes > 0) {
            for (const auto& [first, last] : test::mshowfat_runs(b.image, f.path)) {
                const uint64_t sectors = uint64_t(last - first + 1) * mg.sectors_per_cluster;
                from_mtools.push_back({off, mg.data_start + uint64_t(first - 2) * mg.sectors_per_cluster, sectors});
                off += sectors * 512;
            }
            // Our last run stops at the sector holding the last byte.
            from_mtools.back().sectors = (f.size_bytes + 511) / 512 - from_mtools.back().file_offset / 512;
        }
        EXPECT_EQ(fx.extents, from_mtools);
        // (c) the bytes, through mtools
        const auto got = run_checked({"mcopy", "-i", b.image, "::" + f.path, "-"}).out;
        EXPECT_EQ(test::to_bytes(got), test::expected_content(f));
        EXPECT_EQ(fx.sha256, test::sha256_hex(got));
        EXPECT_EQ(fx.xxh128, test::xxh128_hex(got));
    }
    // (d) exactly the extents asked for, split where asked
    EXPECT_EQ(b.report.files[0].extents.size(), 1u);
    EXPECT_EQ(b.report.files[1].extents.size(), 4u);
    ASSERT_EQ(b.report.files[2].extents.size(), 2u);
    EXPECT_EQ(b.report.files[2].extents[1].file_offset, 5u * c.cluster);
    EXPECT_EQ(b.report.files[5].extents.size(), 1u);
    // The pure parser agrees with itself on a fresh read.
    const auto bytes = test::read_bytes(b.image);
    EXPECT_EQ(fat_file_extents(bytes, "/folder/SPLIT.BIN").extents, b.report.files[2].extents);
    EXPECT_EQ(fat_read_file(bytes, "/big.bin"), test::expected_content(b.spec.files[0]));
}

INSTANTIATE_TEST_SUITE_P(Kinds, Vfat,
                         ::testing::Values(FatCase{"fat12_1k", 12, 3 << 20, 1024},
                                           FatCase{"fat16_512", 16, 16 << 20, 512},
                                           FatCase{"fat32_512", 32, 64 << 20, 512},
                                           FatCase{"fat16_2k", 16, 16 << 20, 2048}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(VfatM3, SmallClustersGiveADiscontiguityInsideAPage) {
    // The MPAGE M3 set-up: 512-byte clusters, a break 2.5 KiB into the file.
    TempDir dir;
    const auto b = test::build(dir, R"({"fs": "vfat", "size_bytes": 16777216, "fat_bits": 16, "cluster_bytes": 512,
        "files": [{"path": "/c.bin", "size_bytes": 65536, "layout": "fragmented", "split_at": [2560]}]})");
    const auto& x = b.report.files[0].extents;
    ASSERT_EQ(x.size(), 2u);
    EXPECT_EQ(x[0].sectors, 5u);
    EXPECT_EQ(x[1].file_offset, 2560u);
    EXPECT_GT(x[1].sector, x[0].sector + x[0].sectors);
}

TEST(VfatErrors, LayoutsTheVolumeCannotHold) {
    TempDir dir;
    try {
        test::build(dir, R"({"fs": "vfat", "size_bytes": 16777216, "cluster_bytes": 4096,
            "files": [{"path": "/f", "size_bytes": 8192, "layout": "fragmented", "extents": 3}]})");
        FAIL() << "3 extents from 2 clusters";
    } catch (const SpecError& e) {
        EXPECT_EQ(e.field(), "files[0].extents");
    }
    try {
        test::build(dir, R"({"fs": "vfat", "size_bytes": 16777216, "cluster_bytes": 4096,
            "files": [{"path": "/f", "size_bytes": 65536, "layout": "fragmented", "split_at": [6144]}]})");
        FAIL() << "a split inside a cluster";
    } catch (const SpecError& e) {
        EXPECT_EQ(e.field(), "files[0].split_at[0]");
    }
    try {
        test::build(dir, R"({"fs": "vfat", "size_bytes": 67108864, "fat_bits": 32, "cluster_bytes": 4096})");
        FAIL() << "FAT32 with too few clusters";
    } catch (const SpecError& e) {
        EXPECT_EQ(e.field(), "cluster_bytes");
    }
    // A failed build leaves no image behind.
    EXPECT_FALSE(std::filesystem::exists(dir.file("disk.img")));
}

}  // namespace
}  // namespace blkrig::image
