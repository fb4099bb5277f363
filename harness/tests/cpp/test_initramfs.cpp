// run/initramfs: a run's own files follow the cached part as a second newc
// archive, starting on the 4-byte boundary where the kernel looks for it,
// with every directory above them, owner 0, mtime 0, in path order; the
// cached part stays byte for byte; bad destinations and unreadable files are
// named and leave the image as it was. The archive is read back here by
// hand, after the kernel's buffer format, not by the library that wrote it.
#include "run/initramfs.hpp"

#include "common/temp_dir.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace blkrig::run {
namespace {

namespace fs = std::filesystem;

struct Entry {
    std::string name;
    unsigned mode = 0, uid = 0, gid = 0, mtime = 0;
    std::string body;
};

std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

// The entries of the newc archive at `at`, up to its trailer; fails the
// test on anything the kernel would not take.
std::vector<Entry> newc(const std::string& d, size_t at) {
    std::vector<Entry> out;
    for (;;) {
        EXPECT_EQ(at % 4, 0U);
        if (d.compare(at, 6, "070701") != 0) {
            ADD_FAILURE() << "no newc magic at " << at;
            return out;
        }
        auto field = [&](int i) { return static_cast<unsigned>(std::stoul(d.substr(at + 6 + 8 * i, 8), nullptr, 16)); };
        Entry e;
        e.mode = field(1), e.uid = field(2), e.gid = field(3), e.mtime = field(5);
        const unsigned size = field(6), namesize = field(11);
        e.name = d.substr(at + 110, namesize - 1);
        EXPECT_EQ(d[at + 110 + namesize - 1], '\0');
        const size_t body = (at + 110 + namesize + 3) & ~size_t{3};
        e.body = d.substr(body, size);
        at = (body + size + 3) & ~size_t{3};
        if (e.name == "TRAILER!!!") {
            EXPECT_LE(d.size(), at) << "bytes after the trailer";
            return out;
        }
        out.push_back(e);
    }
}

class Initramfs : public ::testing::Test {
protected:
    Initramfs() {
        std::ofstream(image_, std::ios::binary) << base_;
        std::ofstream(tmp_.path() / "run.json") << "{\"version\": 1}\n";
        std::ofstream(tmp_.path() / "other", std::ios::binary) << std::string("\0\1\2", 3);
    }
    InitramfsFile file(const std::string& name, const std::string& dest) const { return {tmp_.path() / name, dest}; }

    TempDir tmp_{"blkrig-test-initramfs"};
    fs::path image_ = tmp_.path() / "initrd.gz";
    std::string base_ = "\x1f\x8b gzip";  // 7 bytes: one zero pads it
};

TEST_F(Initramfs, FilesFollowAsAnAlignedNewcArchive) {
    ASSERT_EQ(append_to_initramfs(image_, {file("run.json", "/etc/blkrig/run.json"), file("other", "/other")}), std::nullopt);
    const std::string d = read(image_);
    ASSERT_GT(d.size(), 8U);
    EXPECT_EQ(d.substr(0, 7), base_);
    EXPECT_EQ(d[7], '\0');
    const auto e = newc(d, 8);
    ASSERT_EQ(e.size(), 4U);
    EXPECT_EQ(e[0].name, "etc");
    EXPECT_EQ(e[1].name, "etc/blkrig");
    EXPECT_EQ(e[2].name, "etc/blkrig/run.json");
    EXPECT_EQ(e[3].name, "other");
    EXPECT_EQ(e[0].mode, 040755U);
    EXPECT_EQ(e[1].mode, 040755U);
    EXPECT_EQ(e[2].mode, 0100644U);
    EXPECT_EQ(e[2].body, "{\"version\": 1}\n");
    EXPECT_EQ(e[3].body, std::string("\0\1\2", 3));
    for (const auto& x : e) EXPECT_TRUE(x.uid == 0 && x.gid == 0 && x.mtime == 0) << x.name;
}

TEST_F(Initramfs, AnAlignedImageGetsNoPadding) {
    std::ofstream(image_, std::ios::binary | std::ios::trunc) << "12345678";
    ASSERT_EQ(append_to_initramfs(image_, {file("other", "/o")}), std::nullopt);
    const auto e = newc(read(image_), 8);
    ASSERT_EQ(e.size(), 1U);
    EXPECT_EQ(e[0].name, "o");
}

TEST_F(Initramfs, TheSameFilesGiveTheSameBytes) {
    const fs::path copy = tmp_.path() / "copy.gz";
    fs::copy_file(image_, copy);
    // Given in another order: the archive is in path order either way.
    ASSERT_EQ(append_to_initramfs(image_, {file("run.json", "/etc/run.json"), file("other", "/a/other")}), std::nullopt);
    ASSERT_EQ(append_to_initramfs(copy, {file("other", "/a/other"), file("run.json", "/etc/run.json")}), std::nullopt);
    EXPECT_EQ(read(image_), read(copy));
}

TEST_F(Initramfs, WhatCannotGoInIsNamedAndTheImageIsLeftAsItWas) {
    const struct {
        std::vector<InitramfsFile> files;
        std::string says;
    } cases[] = {
        {{file("missing", "/etc/run.json")}, "missing: not a readable file"},
        {{{tmp_.path(), "/etc/run.json"}}, "not a readable file"},
        {{file("run.json", "etc/run.json")}, "is not absolute"},
        {{file("run.json", "/etc/")}, "bad destination '/etc/'"},
        {{file("run.json", "/etc/../x")}, "bad destination '/etc/../x'"},
        {{file("run.json", "/etc//x")}, "bad destination '/etc//x'"},
        {{file("run.json", "/etc/x"), file("other", "/etc/x")}, "'/etc/x' is given twice"},
        {{file("run.json", "/etc"), file("other", "/etc/x")}, "'/etc' is also a file"},
    };
    for (const auto& c : cases) {
        const auto bad = append_to_initramfs(image_, c.files);
        ASSERT_TRUE(bad.has_value()) << c.says;
        EXPECT_NE(bad->find(c.says), std::string::npos) << *bad;
        EXPECT_EQ(read(image_), base_);
    }
    EXPECT_NE(append_to_initramfs(tmp_.path() / "none.gz", {file("run.json", "/r")}).value_or("").find("none.gz"), std::string::npos);
    EXPECT_FALSE(fs::exists(tmp_.path() / "none.gz"));
}

}  // namespace
}  // namespace blkrig::run
