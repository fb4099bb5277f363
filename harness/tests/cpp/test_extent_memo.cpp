// run/extent_memo: an extent check the guest passed is kept per image,
// kernel, modules and check; a record that is broken, failed or itself
// came from the memo is never kept or handed out.
#include "run/extent_memo.hpp"

#include "common/temp_dir.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace blkrig::run {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class ExtentMemo : public ::testing::Test {
protected:
    ExtentMemo() : kernel_(tmp_.path() / "kernel") {
        ::setenv("BLKRIG_BUILD_CACHE", (tmp_.path() / "cache").c_str(), 1);
        fs::create_directories(kernel_ / "modules");
        std::ofstream(kernel_ / "release") << "6.1.0-test\n";
        std::ofstream(kernel_ / "vmlinuz") << "kernel image";
        std::ofstream(kernel_ / "modules" / "modules.dep") << "\n";
    }
    ~ExtentMemo() override { ::unsetenv("BLKRIG_BUILD_CACHE"); }

    CacheKey key(const std::string& disk = "d1", std::vector<std::string> modules = {"vfat"}) const {
        return extent_memo_key(disk, kernel_, modules, check_);
    }

    TempDir tmp_{"blkrig-test-extent-memo"};
    fs::path kernel_;
    json check_ = {{"fstype", "vfat"}, {"files", {"/f.bin"}}, {"mountpoint", "/run/blkrig-extent-check"}};
    json passed_ = {{"error", ""}, {"files", {{{"path", "/f.bin"}, {"ret", 0}, {"extents", {{{"logical", 0}, {"physical", 4096}, {"length", 8192}}}}}}}};
};

TEST_F(ExtentMemo, APassedCheckIsKeptForTheSameImageKernelAndModules) {
    EXPECT_FALSE(load_extent_memo(key()));
    save_extent_memo(key(), passed_);
    ASSERT_TRUE(load_extent_memo(key()));
    EXPECT_EQ(*load_extent_memo(key()), passed_);
    EXPECT_FALSE(load_extent_memo(key("d2"))) << "another image";
    EXPECT_FALSE(load_extent_memo(key("d1", {"vfat", "nls_cp437"}))) << "other modules";
    std::ofstream(kernel_ / "vmlinuz") << "another kernel";
    EXPECT_FALSE(load_extent_memo(key())) << "another kernel";
}

TEST_F(ExtentMemo, FailedCachedOrBrokenRecordsAreNotUsed) {
    json failed = passed_;
    failed["error"] = "mount: EINVAL";
    save_extent_memo(key(), failed);
    EXPECT_FALSE(load_extent_memo(key()));
    json cached = passed_;
    cached["cached"] = true;
    save_extent_memo(key(), cached);
    EXPECT_FALSE(load_extent_memo(key())) << "a record from the memo is not kept again";
    save_extent_memo(key(), passed_);
    const fs::path dir = tmp_.path() / "cache" / "extent-check";
    ASSERT_TRUE(fs::exists(dir / (key().hex() + ".json")));
    std::ofstream(dir / (key().hex() + ".json")) << "{not json";
    EXPECT_FALSE(load_extent_memo(key()));
    EXPECT_FALSE(fs::exists(dir / (key().hex() + ".json"))) << "a broken memo is removed";
}

}  // namespace
}  // namespace blkrig::run
