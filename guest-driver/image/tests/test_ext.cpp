// ext4 and ext2 images, checked against debugfs: bmap for every logical
// block, cat for the bytes, stat for the size.
#include "helpers.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <sstream>

namespace blkrig::image {
namespace {

using blkrig::TempDir;

// Physical block of each logical block (0 for a hole), from debugfs bmap.
std::vector<uint64_t> bmap(const TempDir& dir, const std::string& image, const std::string& path, uint64_t blocks) {
    const std::string script = dir.file("bmap.txt");
    {
        std::ofstream s(script);
        for (uint64_t k = 0; k < blocks; ++k) s << "bmap " << path << " " << k << "\n";
    }
    std::istringstream out(run_checked({"debugfs", "-f", script, image}).out);
    std::vector<uint64_t> phys;
    std::string line;
    while (std::getline(out, line)) {
        if (line.empty() || line.starts_with("debugfs:")) continue;
        phys.push_back(std::stoull(line));
    }
    return phys;
}

// The same, from our report.
std::vector<uint64_t> from_report(const FileExtents& fx, uint64_t block, uint64_t blocks) {
    std::vector<uint64_t> phys(blocks, 0);
    const uint64_t per = block / 512;
    for (const auto& x : fx.extents) {
        for (uint64_t k = 0; k < x.sectors / per; ++k) {
            const uint64_t logical = x.file_offset / block + k;
            if (logical < blocks) phys[logical] = x.sector / per + k;
        }
    }
    return phys;
}

void check_against_debugfs(const TempDir& dir, const test::Built& b) {
    const uint64_t block = b.report.geometry.alloc_bytes;
    for (size_t i = 0; i < b.spec.files.size(); ++i) {
        const FileSpec& f = b.spec.files[i];
        SCOPED_TRACE(f.path);
        const FileExtents& fx = b.report.files[i];
        const uint64_t blocks = (f.size_bytes + block - 1) / block;
        // (b) the block map
        EXPECT_EQ(from_report(fx, block, blocks), bmap(dir, b.image, f.path, blocks));
        // (c) the bytes; (e) the exact size
        const std::string got = run_checked({"debugfs", "-R", "cat " + f.path, b.image}).out;
        EXPECT_EQ(test::to_bytes(got), test::expected_content(f));
        EXPECT_EQ(fx.sha256, test::sha256_hex(got));
        EXPECT_EQ(fx.xxh128, test::xxh128_hex(got));
        EXPECT_EQ(fx.size_bytes, f.size_bytes);
        const std::string stat = run_checked({"debugfs", "-R", "stat " + f.path, b.image}).out;
        EXPECT_NE(stat.find(fmt::format("Size: {}\n", f.size_bytes)), std::string::npos) << stat;
    }
}

TEST(Ext4, ContiguousFragmentedSparseAndZeroFiles) {
    for (uint32_t block : {4096u, 1024u}) {
        SCOPED_TRACE(block);
        TempDir dir;
        const auto b = test::build(dir, fmt::format(R"({{"fs": "ext4", "size_bytes": 33554432, "block_bytes": {},
            "files": [
              {{"path": "/big.bin", "size_bytes": 5242880, "seed": 11}},
              {{"path": "/d/frag.bin", "size_bytes": 70000, "content": "pattern", "layout": "fragmented", "extents": 9}},
              {{"path": "/d/split.bin", "size_bytes": 40960, "layout": "fragmented", "split_at": [{}, {}]}},
              {{"path": "/sparse.bin", "size_bytes": 102400, "layout": "sparse",
                "holes": [[0, {}], [{}, {}], [{}, {}]]}},
              {{"path": "/zero.bin", "size_bytes": 5000, "content": "zero"}},
              {{"path": "/e/empty", "size_bytes": 0}}]}})",
                                                    block, block, 3 * block, block, 4 * block, 2 * block,
                                                    20 * block, 102400 - 20 * block));
        EXPECT_EQ(b.report.geometry.fs, FsKind::ext4);
        EXPECT_EQ(b.report.geometry.alloc_bytes, block);
        check_against_debugfs(dir, b);
        const auto& r = b.report.files;
        // 5 MiB in one run even where 1 KiB blocks put group metadata every 8 MiB
        EXPECT_EQ(r[0].extents.size(), 1u);
        // (d) fragmented: exactly N extents, at the offsets asked for; past
        // four the inode needs an extent-tree block, which must not land
        // inside a run
        EXPECT_EQ(r[1].extents.size(), 9u);
        EXPECT_EQ(r[1].metadata.size(), 1u);
        ASSERT_EQ(r[2].extents.size(), 3u);
        EXPECT_EQ(r[2].extents[1].file_offset, block);
        EXPECT_EQ(r[2].extents[2].file_offset, 3 * block);
        // sparse: nothing mapped in the holes
        ASSERT_EQ(r[3].extents.size(), 2u);
        EXPECT_EQ(r[3].extents[0].file_offset, block);
        EXPECT_EQ(r[3].extents[1].file_offset, 6 * block);
        // an all-zero file is still allocated
        EXPECT_EQ(r[4].extents.size(), 1u);
        EXPECT_TRUE(r[5].extents.empty());
    }
}

TEST(Ext2, IndirectBlocksAreReportedAndTheRunIsUnbroken) {
    TempDir dir;
    const auto b = test::build(dir, R"({"fs": "ext2", "size_bytes": 16777216, "block_bytes": 1024,
        "files": [{"path": "/f.bin", "size_bytes": 40000, "seed": 4},
                  {"path": "/s.bin", "size_bytes": 40960, "layout": "sparse", "holes": [[4096, 8192]]}]})");
    EXPECT_EQ(b.report.geometry.fs, FsKind::ext2);
    check_against_debugfs(dir, b);
    const FileExtents& f = b.report.files[0];
    // Blocks 0-11, the indirect block, blocks 12..: the M12 layout.
    ASSERT_EQ(f.extents.size(), 2u);
    ASSERT_EQ(f.metadata.size(), 1u);
    EXPECT_EQ(f.metadata[0].kind, "IND");
    EXPECT_EQ(f.extents[0].sectors, 24u);
    EXPECT_EQ(f.metadata[0].sector, f.extents[0].sector + 24);
    EXPECT_EQ(f.extents[1].sector, f.metadata[0].sector + 2);
    EXPECT_EQ(f.extents[1].file_offset, 12u * 1024);
}

TEST(ExtErrors, ToolFailuresAreToolErrors) {
    TempDir dir;
    // Far too small for an ext4 filesystem: mke2fs refuses.
    EXPECT_THROW(test::build(dir, R"({"fs": "ext4", "size_bytes": 8192})"), ToolError);
    EXPECT_FALSE(std::filesystem::exists(dir.file("disk.img")));
}

}  // namespace
}  // namespace blkrig::image
