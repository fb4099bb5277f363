// run/filter_hint: what a boot's hello says was set by line is kept per
// kernel, modules and functions, handed to the next run's run.json, and a
// hint the agent's parser would refuse never reaches the guest.
#include "run/filter_hint.hpp"

#include "common/temp_dir.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace blkrig::run {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json run_spec() {
    return json::parse(R"({"version": 1, "disk": "/dev/vda", "mountpoint": "/mnt", "fstype": "vfat",
      "marker": {"first_sector": 131072, "count": 64},
      "trace": {"events": [], "functions": ["mpage_*"]}, "steps": [{"op": "sync"}]})");
}

class FilterHint : public ::testing::Test {
protected:
    FilterHint() : kernel_(tmp_.path() / "kernel") {
        ::setenv("BLKRIG_BUILD_CACHE", (tmp_.path() / "cache").c_str(), 1);
        fs::create_directories(kernel_ / "modules");
        std::ofstream(kernel_ / "release") << "6.1.0-test\n";
        std::ofstream(kernel_ / "modules" / "modules.dep") << "\n";
    }
    ~FilterHint() override { ::unsetenv("BLKRIG_BUILD_CACHE"); }

    TempDir tmp_{"blkrig-test-filter-hint"};
    fs::path kernel_;
};

TEST_F(FilterHint, WhatHelloSetByLineIsTheNextRunsHint) {
    const CacheKey key = filter_hint_key(kernel_, {"virtio_blk", "vfat"}, {"mpage_*"});
    EXPECT_FALSE(load_filter_hint(key, run_spec()).has_value()) << "nothing kept yet";
    const json hello = {{"filter_lines", {7, 9}}, {"filter_hint", "none"}, {"functions_traced", {"mpage_a", "mpage_b"}},
                        {"functions_missing", {"gone"}}};
    save_filter_hint(key, hello);
    const auto hint = load_filter_hint(key, run_spec());
    ASSERT_TRUE(hint.has_value());
    EXPECT_EQ((*hint)["lines"], json({7, 9}));
    EXPECT_EQ((*hint)["selected"], json({"mpage_a", "mpage_b"}));
    EXPECT_EQ((*hint)["missing"], json({"gone"}));
    // Another module list, kernel or set of functions numbers the list otherwise.
    EXPECT_FALSE(load_filter_hint(filter_hint_key(kernel_, {"virtio_blk", "ext4"}, {"mpage_*"}), run_spec()).has_value());
    EXPECT_FALSE(load_filter_hint(filter_hint_key(kernel_, {"virtio_blk", "vfat"}, {"mpage_*", "x"}), run_spec()).has_value());
    std::ofstream(kernel_ / "release") << "6.1.0-other\n";
    EXPECT_FALSE(load_filter_hint(filter_hint_key(kernel_, {"virtio_blk", "vfat"}, {"mpage_*"}), run_spec()).has_value());
}

TEST_F(FilterHint, NothingIsKeptWithoutLines) {
    const CacheKey key = filter_hint_key(kernel_, {"virtio_blk"}, {"mpage_*"});
    save_filter_hint(key, json{{"filter_lines", json::array()}, {"functions_traced", json::array()}});
    save_filter_hint(key, json{{"functions_traced", {"mpage_a"}}});  // set by name: no lines
    save_filter_hint(key, json());                                   // no hello at all
    EXPECT_FALSE(load_filter_hint(key, run_spec()).has_value());
}

// A kept file the agent would refuse (names it cannot take, lines out of
// order, not JSON) is dropped: the guest reads the list and the next run
// keeps a good one.
TEST_F(FilterHint, AHintTheAgentWouldRefuseIsDropped) {
    const CacheKey key = filter_hint_key(kernel_, {"virtio_blk"}, {"mpage_*"});
    for (const std::string text : {R"({"lines": [3, 2], "selected": ["a"], "missing": []})",
                                   R"({"lines": [3], "selected": ["a b"], "missing": []})", "not json"}) {
        save_filter_hint(key, json{{"filter_lines", {1}}, {"functions_traced", {"a"}}});
        const fs::path file = tmp_.path() / "cache" / "ftrace-filter" / (key.hex() + ".json");
        ASSERT_TRUE(fs::exists(file));
        std::ofstream(file) << text;
        EXPECT_FALSE(load_filter_hint(key, run_spec()).has_value()) << text;
        EXPECT_FALSE(fs::exists(file)) << text;
    }
}

}  // namespace
}  // namespace blkrig::run
