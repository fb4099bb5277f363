// Run folders are ours and nothing else is: claiming, locking and replacing
// them, files created without following symlinks or replacing anything,
// atomic artifacts, and the reaping of temporary folders a killed blkrig
// left. Real files in a private temporary folder.
#include "folder/run_folder.hpp"
#include "launch/process.hpp"

#include "common/temp_dir.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace blkrig::folder {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void put(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

// What claim throws, as exit code and message.
std::pair<int, std::string> claim_error(const fs::path& dir, Kind kind, bool force) {
    try {
        Claim c = claim(dir, kind, force);
    } catch (const FolderError& e) {
        return {e.exit_code, e.what()};
    }
    return {0, ""};
}

class RunFolderTest : public ::testing::Test {
protected:
    TempDir tmp_;
    fs::path root_ = fs::path(tmp_.file("x")).parent_path();
};

TEST_F(RunFolderTest, NewFolderIsCreatedMarkedAndLockedWithOurPid) {
    const fs::path d = root_ / "a" / "run";
    Claim c = claim(d, Kind::run, false);
    EXPECT_TRUE(fs::is_directory(d));
    EXPECT_EQ(kind_of(d), Kind::run);
    EXPECT_EQ(slurp(d / kLock), std::to_string(::getpid()) + "\n");
    EXPECT_FALSE(c.replaced());
}

TEST_F(RunFolderTest, EmptyFolderIsTaken) {
    fs::create_directories(root_ / "empty");
    Claim c = claim(root_ / "empty", Kind::matrix, false);
    EXPECT_EQ(kind_of(root_ / "empty"), Kind::matrix);
}

TEST_F(RunFolderTest, FolderNotOursIsRefusedAndLeftUntouchedEvenWithForce) {
    const fs::path d = root_ / "mine";
    fs::create_directories(d);
    put(d / "notes.txt", "x");
    put(root_ / "target", "precious");
    fs::create_symlink(root_ / "target", d / "disk.img");
    for (bool force : {false, true}) {
        const auto [code, what] = claim_error(d, Kind::run, force);
        EXPECT_EQ(code, 2);
        EXPECT_NE(what.find("not a blkrig run folder"), std::string::npos) << what;
        EXPECT_NE(what.find("notes.txt"), std::string::npos) << what;
    }
    // Nothing added, nothing changed.
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(d)) ++n;
    EXPECT_EQ(n, 2u);
    EXPECT_EQ(slurp(root_ / "target"), "precious");
}

TEST_F(RunFolderTest, SecondClaimNamesTheHoldersPid) {
    const fs::path d = root_ / "run";
    Claim first = claim(d, Kind::run, false);
    const auto [code, what] = claim_error(d, Kind::run, true);
    EXPECT_EQ(code, 2);
    EXPECT_NE(what.find("in use by another blkrig (pid " + std::to_string(::getpid()) + ")"), std::string::npos) << what;
}

TEST_F(RunFolderTest, LockGoesWithTheClaim) {
    const fs::path d = root_ / "run";
    { Claim first = claim(d, Kind::run, false); }
    Claim again = claim(d, Kind::run, false);  // marked and empty: no earlier run in it
    EXPECT_FALSE(again.replaced());
}

TEST_F(RunFolderTest, EarlierRunNeedsForceAndForceRemovesLinksNotTargets) {
    const fs::path d = root_ / "run";
    { Claim c = claim(d, Kind::run, false); }
    put(d / "verdict.json", "{}");
    fs::create_directories(d / "kernel");
    put(root_ / "target", "precious");
    fs::create_symlink(root_ / "target", d / "disk.img");
    fs::create_directory_symlink(root_, d / "linked-folder");
    const auto [code, what] = claim_error(d, Kind::run, false);
    EXPECT_EQ(code, 2);
    EXPECT_NE(what.find("earlier blkrig run"), std::string::npos) << what;
    EXPECT_NE(what.find("--force"), std::string::npos) << what;
    EXPECT_TRUE(fs::exists(d / "verdict.json"));

    Claim c = claim(d, Kind::run, true);
    EXPECT_TRUE(c.replaced());
    EXPECT_FALSE(fs::exists(d / "verdict.json"));
    EXPECT_FALSE(fs::is_symlink(d / "disk.img"));
    EXPECT_FALSE(fs::exists(d / "kernel"));
    EXPECT_FALSE(fs::is_symlink(d / "linked-folder"));
    EXPECT_EQ(slurp(root_ / "target"), "precious");
    EXPECT_TRUE(fs::exists(root_ / "target"));
}

TEST_F(RunFolderTest, MatrixFolderReplacedByARunOnlyWithForce) {
    const fs::path d = root_ / "m";
    { Claim c = claim(d, Kind::matrix, false); }
    EXPECT_EQ(claim_error(d, Kind::run, false).first, 2);
    Claim c = claim(d, Kind::run, true);
    EXPECT_EQ(kind_of(d), Kind::run);
}

TEST_F(RunFolderTest, MatrixCellWithItsLogIsTakenWithoutForce) {
    const fs::path d = root_ / "cell";
    mark_new(d, Kind::run);
    put(d / kMatrixLog, "blkrig: running ...\n");
    Claim c = claim(d, Kind::run, false);
    EXPECT_EQ(slurp(d / kMatrixLog), "blkrig: running ...\n");
    // Unmarked, the same log is somebody else's file.
    const fs::path e = root_ / "plain";
    fs::create_directories(e);
    put(e / kMatrixLog, "x");
    EXPECT_EQ(claim_error(e, Kind::run, false).first, 2);
}

TEST_F(RunFolderTest, CreateNewRefusesSymlinksAndExistingFiles) {
    put(root_ / "target", "precious");
    fs::create_symlink(root_ / "target", root_ / "link");
    put(root_ / "there", "mine");
    for (const char* name : {"link", "there"}) {
        try {
            ::close(create_new(root_ / name));
            ADD_FAILURE() << name << " was opened";
        } catch (const FolderError& e) {
            EXPECT_EQ(e.exit_code, 3);
            EXPECT_NE(std::string(e.what()).find(name), std::string::npos);
        }
    }
    EXPECT_EQ(slurp(root_ / "target"), "precious");
    EXPECT_EQ(slurp(root_ / "there"), "mine");
}

TEST_F(RunFolderTest, WriteAtomicReplacesALinkNotItsTarget) {
    put(root_ / "target", "precious");
    fs::create_symlink(root_ / "target", root_ / "verdict.json");
    write_atomic(root_ / "verdict.json", "{\"outcome\":\"pass\"}\n");
    EXPECT_FALSE(fs::is_symlink(root_ / "verdict.json"));
    EXPECT_EQ(slurp(root_ / "verdict.json"), "{\"outcome\":\"pass\"}\n");
    EXPECT_EQ(slurp(root_ / "target"), "precious");
    // No temporary is left beside it.
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(root_)) ++n;
    EXPECT_EQ(n, 2u);
}

TEST_F(RunFolderTest, CopyNewCopiesAndNeverReplaces) {
    std::string big(300000, 'x');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
    put(root_ / "src", big);
    copy_new(root_ / "src", root_ / "dst");
    EXPECT_EQ(slurp(root_ / "dst"), big);
    put(root_ / "target", "precious");
    fs::create_symlink(root_ / "target", root_ / "disk.img");
    EXPECT_THROW(copy_new(root_ / "src", root_ / "disk.img"), FolderError);
    EXPECT_EQ(slurp(root_ / "target"), "precious");
    EXPECT_THROW(copy_new(root_ / "missing", root_ / "new"), FolderError);
    EXPECT_FALSE(fs::exists(root_ / "new"));
}

TEST_F(RunFolderTest, ACopyKeepsItsHoles) {
    // A 64 MiB image with two written MiB: the copy reads the same and
    // holds about what was written, not 64 MiB of zeros.
    const fs::path src = root_ / "sparse.img";
    {
        std::ofstream o(src, std::ios::binary);
        o.seekp(1 << 20);
        o << std::string(1 << 20, 'a');
        o.seekp(40 << 20);
        o << std::string(1 << 20, 'b');
        o.seekp((64 << 20) - 1);
        o << 'z';
    }
    copy_new(src, root_ / "copy.img");
    EXPECT_EQ(fs::file_size(root_ / "copy.img"), 64u << 20);
    EXPECT_EQ(slurp(root_ / "copy.img"), slurp(src));
    struct stat st{};
    ASSERT_EQ(::stat((root_ / "copy.img").c_str(), &st), 0);
    EXPECT_LT(st.st_blocks * 512, 8 << 20) << "the holes were filled";
}

TEST_F(RunFolderTest, InterruptionIsReadFromTheVerdict) {
    EXPECT_FALSE(interruption(root_));
    put(root_ / "verdict.json", R"({"outcome": "pass"})");
    EXPECT_FALSE(interruption(root_));
    put(root_ / "verdict.json", R"({"outcome": "interrupted", "problems": ["interrupted by signal 2 (Interrupt) while booting the guest"]})");
    EXPECT_EQ(interruption(root_), "the run was interrupted by signal 2 (Interrupt) while booting the guest");
}

std::string fmt_pid_tool(pid_t p) { return "blkrig-tool-" + std::to_string(p) + "-ABCDEF"; }

// A pid that is surely gone: a child that exited and was reaped.
pid_t dead_pid() {
    const pid_t p = ::fork();
    if (p == 0) ::_exit(0);
    int st;
    ::waitpid(p, &st, 0);
    return p;
}

TEST_F(RunFolderTest, StaleTemporaryFoldersOfDeadOwnersAreReaped) {
    const pid_t dead = dead_pid();
    auto folder = [&](const char* name, std::optional<pid_t> owner) {
        fs::create_directories(root_ / name);
        put(root_ / name / "vu.sock", "");
        if (owner) put(root_ / name / "owner", std::to_string(*owner) + "\n");
    };
    folder("blkrig-aaaaaa", dead);        // a killed blkrig's: reaped
    folder("blkrig-bbbbbb", ::getpid());  // a live one's: kept
    folder("blkrig-cccccc", std::nullopt);  // no owner (someone else's, or being made): kept
    folder("other-dddddd", dead);         // not our pattern: kept
    put(root_ / fmt_pid_tool(dead), "");
    put(root_ / ("blkrig-tool-" + std::to_string(::getpid()) + "-XYZXYZ"), "");
    EXPECT_EQ(launch::reap_stale_temp(root_), 2u);
    EXPECT_FALSE(fs::exists(root_ / "blkrig-aaaaaa"));
    EXPECT_TRUE(fs::exists(root_ / "blkrig-bbbbbb"));
    EXPECT_TRUE(fs::exists(root_ / "blkrig-cccccc"));
    EXPECT_TRUE(fs::exists(root_ / "other-dddddd"));
    EXPECT_FALSE(fs::exists(root_ / fmt_pid_tool(dead)));
    EXPECT_TRUE(fs::exists(root_ / ("blkrig-tool-" + std::to_string(::getpid()) + "-XYZXYZ")));
}

}  // namespace
}  // namespace blkrig::folder
