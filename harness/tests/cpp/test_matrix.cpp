// The matrix's pieces without a guest: the build cache builds once per key
// (also with concurrent callers), keeps no failed build, and tells a change
// of any input; the worst exit code; the JUnit XML of a matrix.
#include "run/build_cache.hpp"
#include "run/matrix.hpp"

#include "common/temp_dir.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace blkrig::run {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct CacheEnv {
    TempDir dir;
    CacheEnv() { ::setenv("BLKRIG_BUILD_CACHE", dir.file("cache").c_str(), 1); }
    ~CacheEnv() { ::unsetenv("BLKRIG_BUILD_CACHE"); }
};

TEST(BuildCache, BuildsOncePerKeyAndCopiesAfter) {
    CacheEnv env;
    std::atomic<int> builds{0};
    auto build = [&](const fs::path& d) -> std::optional<std::string> {
        ++builds;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        std::ofstream(d / "out.bin") << "built";
        return std::nullopt;
    };
    std::vector<std::thread> ts;
    std::vector<std::string> how(4);
    for (int i = 0; i < 4; ++i) {
        const fs::path dest = env.dir.file("dest" + std::to_string(i));
        fs::create_directories(dest);
        ts.emplace_back([&, i, dest] { how[i] = cached_build(CacheKey("t").text("same input"), {"out.bin"}, dest, build).how; });
    }
    for (auto& t : ts) t.join();
    EXPECT_EQ(builds.load(), 1);
    EXPECT_EQ(std::count(how.begin(), how.end(), "built"), 1);
    EXPECT_EQ(std::count(how.begin(), how.end(), "hit"), 3);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(slurp(env.dir.file("dest" + std::to_string(i)) + "/out.bin"), "built");
}

TEST(BuildCache, AFailedBuildLeavesNothingToTake) {
    CacheEnv env;
    const fs::path dest = env.dir.file("dest");
    fs::create_directories(dest);
    const auto r = cached_build(CacheKey("t").text("x"), {"out.bin"}, dest, [](const fs::path& d) -> std::optional<std::string> {
        std::ofstream(d / "out.bin") << "half";
        return "mkfs failed";
    });
    ASSERT_TRUE(r.error);
    EXPECT_EQ(*r.error, "mkfs failed");
    int builds = 0;
    const auto again = cached_build(CacheKey("t").text("x"), {"out.bin"}, dest, [&](const fs::path& d) -> std::optional<std::string> {
        ++builds;
        std::ofstream(d / "out.bin") << "whole";
        return std::nullopt;
    });
    EXPECT_FALSE(again.error);
    EXPECT_EQ(builds, 1);
    EXPECT_EQ(slurp(dest / "out.bin"), "whole");
    // No temporary build folder is left in the cache.
    for (const auto& e : fs::directory_iterator(fs::path(env.dir.file("cache")) / "t"))
        EXPECT_EQ(e.path().filename().string().rfind(".build-", 0), std::string::npos) << e.path();
}

// A file's digest is remembered by what stat says of it: the memo is what
// a run reads (a planted digest shows through), and any rewrite of the file
// (a new ctime) makes it hashed again. A file changed in the last seconds
// is not remembered at all.
TEST(BuildCache, RemembersAFilesDigestUntilTheFileChanges) {
    CacheEnv env;
    TempDir d;
    const fs::path f = d.file("tool");
    std::ofstream(f) << "v1";
    const std::string fresh = CacheKey("t").file(f).hex();
    const fs::path memos = fs::path(env.dir.file("cache")) / "digests";
    EXPECT_FALSE(fs::exists(memos)) << "a file written just now was remembered";
    std::this_thread::sleep_for(std::chrono::milliseconds(3100));
    EXPECT_EQ(fresh, CacheKey("t").file(f).hex());
    ASSERT_TRUE(fs::exists(memos));
    std::vector<fs::path> entries(fs::directory_iterator(memos), fs::directory_iterator{});
    ASSERT_EQ(entries.size(), 1u);
    // Plant another digest under the same stat line: the key follows the memo.
    std::string stat_line;
    std::getline(std::ifstream(entries[0]) >> std::ws, stat_line);
    std::ofstream(entries[0]) << stat_line << "\n" << std::string(64, 'a') << "\n";
    const std::string planted = CacheKey("t").file(f).hex();
    EXPECT_NE(planted, fresh) << "the memo was not read";
    // The same size, new content: a new ctime, so hashed again.
    std::ofstream(f) << "v2";
    const std::string changed = CacheKey("t").file(f).hex();
    EXPECT_NE(changed, planted);
    EXPECT_NE(changed, fresh);
    std::ofstream(f) << "v1";
    EXPECT_EQ(CacheKey("t").file(f).hex(), fresh);
}

TEST(BuildCache, KeyFollowsFileContent) {
    TempDir d;
    std::ofstream(d.file("tool")) << "v1";
    const std::string k1 = CacheKey("t").text("spec").file(d.file("tool")).hex();
    EXPECT_EQ(k1, CacheKey("t").text("spec").file(d.file("tool")).hex());
    std::ofstream(d.file("tool")) << "v2";
    EXPECT_NE(k1, CacheKey("t").text("spec").file(d.file("tool")).hex());
    EXPECT_NE(k1, CacheKey("t").text("spec2").file(d.file("tool")).hex());
    EXPECT_NE(CacheKey("a").text("x").hex(), CacheKey("b").text("x").hex());
    // Past the first read: a change in a 3 MiB file's last byte is a new key; the same bytes elsewhere are the same key.
    std::string big(3u << 20, 'q');
    std::ofstream(d.file("big1"), std::ios::binary) << big;
    std::ofstream(d.file("big2"), std::ios::binary) << big;
    const std::string kb = CacheKey("t").file(d.file("big1")).hex();
    EXPECT_EQ(kb, CacheKey("t").file(d.file("big2")).hex());
    big.back() = 'r';
    std::ofstream(d.file("big2"), std::ios::binary) << big;
    EXPECT_NE(kb, CacheKey("t").file(d.file("big2")).hex());
    EXPECT_NE(CacheKey("t").file(d.file("absent")).hex(), CacheKey("t").file(d.file("big1")).hex());
    // Text boundaries count: "ab"+"c" is not "a"+"bc".
    EXPECT_NE(CacheKey("t").text("ab").text("c").hex(), CacheKey("t").text("a").text("bc").hex());
}

TEST(BuildCache, OffBuildsInPlace) {
    TempDir d;
    ::setenv("BLKRIG_BUILD_CACHE", "off", 1);
    const auto r = cached_build(CacheKey("t").text("x"), {"o"}, d.file(""), [](const fs::path& dir) -> std::optional<std::string> {
        std::ofstream(dir / "o") << "here";
        return std::nullopt;
    });
    ::unsetenv("BLKRIG_BUILD_CACHE");
    EXPECT_STREQ(r.how, "uncached");
    EXPECT_EQ(slurp(d.file("o")), "here");
}

TEST(Matrix, WorstExit) {
    EXPECT_EQ(worst_exit(0, 1), 1);
    EXPECT_EQ(worst_exit(1, 2), 2);
    EXPECT_EQ(worst_exit(3, 2), 3);
    EXPECT_EQ(worst_exit(3, 130), 130);
    EXPECT_EQ(worst_exit(130, 0), 130);
    EXPECT_EQ(worst_exit(1, 0), 1);
}

TEST(Matrix, JunitNamesEachCheckAndEscapes) {
    TempDir d;
    Cell a{"s/a.toml", "a<&>", "k1", d.file("a"), 2, ""};
    Cell b{"s/b.toml", "b", "k1", d.file("b"), 1, ""};
    Cell c{"s/c.toml", "c", "k1", d.file("c"), 1, "needs --disk-from"};
    fs::create_directories(a.out);
    std::ofstream(a.out / "verdict.json") << R"({"scenario": "s/a.toml", "steps": [
        {"index": 0, "op": "mount", "ran": true, "ok": true, "checks": []},
        {"index": 1, "op": "read", "ran": true, "ok": false, "checks": [{"what": "ret", "expected": 0, "got": -5, "ok": false}]}],
      "expect": [{"where": "s/a.toml:20", "property": "ascending", "ok": false, "message": "seq 7 goes back"}]})";
    std::vector<CellResult> rs(3);
    rs[0] = {1, "fail", 2.5, 10, {"x"}};
    rs[1] = {3, "error", 1.0, 0, {"boot: QEMU exited with 1\nmore"}};
    rs[2] = {0, "skipped", 0, 0, {"needs --disk-from"}};
    const std::string x = junit_xml({a, b, c}, rs);
    EXPECT_NE(x.find("tests=\"3\" failures=\"1\" errors=\"1\" skipped=\"1\""), std::string::npos) << x;
    EXPECT_NE(x.find("name=\"a&lt;&amp;&gt; on k1\""), std::string::npos) << x;
    EXPECT_NE(x.find("<property name=\"check: step 0 mount\" value=\"pass\"/>"), std::string::npos) << x;
    EXPECT_NE(x.find("<property name=\"check: step 1 read\" value=\"fail\"/>"), std::string::npos) << x;
    EXPECT_NE(x.find("<property name=\"check: expect a.toml:20 ascending\" value=\"fail\"/>"), std::string::npos) << x;
    EXPECT_NE(x.find("<failure message=\"step 1 read: ret: expected 0, got -5\">"), std::string::npos) << x;
    EXPECT_NE(x.find("seq 7 goes back"), std::string::npos) << x;
    EXPECT_NE(x.find("<error message=\"boot: QEMU exited with 1\">"), std::string::npos) << x;
    EXPECT_NE(x.find("<skipped message=\"needs --disk-from\"/>"), std::string::npos) << x;
    EXPECT_NE(x.find("name=\"run_dir\" value=\"" + fs::absolute(a.out).string() + "\""), std::string::npos) << x;
}

}  // namespace
}  // namespace blkrig::run
