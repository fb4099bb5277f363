// Paths users name and host limits: a socket path is taken only when empty
// or stale (never a file, never a live socket), one file is not given for
// two jobs, and /proc/meminfo's MemTotal is read right.
#include "common/temp_dir.hpp"

#include "common/host.hpp"
#include "common/paths.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace blkrig {
namespace {

namespace fs = std::filesystem;

// A socket bound at path; listening or not (a bound, never-listening socket
// refuses connections just as a dead program's leftover does).
int bound_socket(const std::string& path, bool listening) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
    if (listening) {
        EXPECT_EQ(::listen(fd, 1), 0);
    }
    return fd;
}

// A socket left behind by a program that is gone.
void stale_socket(const std::string& path) { ::close(bound_socket(path, false)); }

TEST(SocketPath, EachStateIsTold) {
    TempDir dir;
    EXPECT_EQ(probe_socket_path(dir.file("none")), SocketPathState::absent);
    std::ofstream(dir.file("notes.txt")) << "x\n";
    EXPECT_EQ(probe_socket_path(dir.file("notes.txt")), SocketPathState::not_a_socket);
    fs::create_directory(dir.file("folder"));
    EXPECT_EQ(probe_socket_path(dir.file("folder")), SocketPathState::not_a_socket);
    fs::create_symlink(dir.file("none"), dir.file("dangling"));
    EXPECT_EQ(probe_socket_path(dir.file("dangling")), SocketPathState::not_a_socket);
    stale_socket(dir.file("stale.sock"));
    EXPECT_EQ(probe_socket_path(dir.file("stale.sock")), SocketPathState::stale_socket);
    const int live = bound_socket(dir.file("live.sock"), true);
    EXPECT_EQ(probe_socket_path(dir.file("live.sock")), SocketPathState::live_socket);
    ::close(live);
}

TEST(SocketPath, ClaimRemovesOnlyAStaleSocket) {
    TempDir dir;
    stale_socket(dir.file("stale.sock"));
    claim_socket_path("--control", dir.file("stale.sock"));
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir.file("stale.sock"))));
    claim_socket_path("--control", dir.file("absent.sock"));  // nothing to do

    std::ofstream(dir.file("notes.txt")) << "keep me\n";
    try {
        claim_socket_path("--control", dir.file("notes.txt"));
        ADD_FAILURE() << "a regular file was claimed";
    } catch (const PathError& e) {
        EXPECT_NE(std::string(e.what()).find("--control " + dir.file("notes.txt") + ": exists and is not a socket"), std::string::npos) << e.what();
    }
    std::ifstream in(dir.file("notes.txt"));
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, "keep me");

    const int live = bound_socket(dir.file("live.sock"), true);
    try {
        claim_socket_path("--socket-path", dir.file("live.sock"));
        ADD_FAILURE() << "a live socket was claimed";
    } catch (const PathError& e) {
        EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
    }
    EXPECT_EQ(probe_socket_path(dir.file("live.sock")), SocketPathState::live_socket);
    ::close(live);
}

TEST(SocketPath, OwnSocketIsRemovedOnlyWhileItIsOurs) {
    TempDir dir;
    const int fd = bound_socket(dir.file("s"), true);
    const OwnSocket own = own_socket(dir.file("s"));
    ASSERT_NE(own.ino, 0u);
    // Someone replaced it meanwhile: theirs stays.
    fs::remove(dir.file("s"));
    std::ofstream(dir.file("s")) << "theirs\n";
    remove_own_socket(own);
    EXPECT_TRUE(fs::is_regular_file(dir.file("s")));
    ::close(fd);
    fs::remove(dir.file("s"));
    const int fd2 = bound_socket(dir.file("s"), true);
    remove_own_socket(own_socket(dir.file("s")));
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir.file("s"))));
    ::close(fd2);
}

TEST(SameFile, TheFirstPairNamingOneFileIsNamed) {
    TempDir dir;
    std::ofstream(dir.file("disk.img")) << "x";
    EXPECT_FALSE(same_file_twice({{"--blk-file", dir.file("disk.img")}, {"--trace", dir.file("t.bin")}, {"--control", ""}, {"--write-log", ""}}));
    // The same spelling, through "..", through a symlink, and a hard link.
    fs::create_directory(dir.file("sub"));
    fs::create_symlink(dir.file("disk.img"), dir.file("link.img"));
    fs::create_hard_link(dir.file("disk.img"), dir.file("hard.img"));
    for (const std::string& other : {dir.file("disk.img"), dir.file("sub/../disk.img"), dir.file("link.img"), dir.file("hard.img")}) {
        const auto why = same_file_twice({{"--blk-file", dir.file("disk.img")}, {"--trace", other}});
        ASSERT_TRUE(why) << other;
        EXPECT_NE(why->find("--blk-file and --trace both name " + dir.file("disk.img")), std::string::npos) << *why;
    }
    // Files not there yet count by their path.
    EXPECT_TRUE(same_file_twice({{"--socket-path", dir.file("new.sock")}, {"--control", dir.file("sub/../new.sock")}}));
    // /dev/null may take several outputs.
    EXPECT_FALSE(same_file_twice({{"--trace", "/dev/null"}, {"--write-log", "/dev/null"}}));
}

TEST(HostLimits, MemTotalIsReadFromMeminfo) {
    EXPECT_EQ(host::parse_mem_total("MemTotal:       16303100 kB\nMemFree:  1 kB\n"), 16303100ull * 1024);
    EXPECT_EQ(host::parse_mem_total("MemFree: 5 kB\nMemTotal: 2048 kB\n"), 2048ull * 1024);
    EXPECT_FALSE(host::parse_mem_total("MemFree: 5 kB\n"));
    EXPECT_FALSE(host::parse_mem_total("MemTotal: lots\n"));
    EXPECT_FALSE(host::parse_mem_total("MemTotal: 99999999999999999999 kB\n"));  // does not fit
    // This host's is there and plausible; free space is known for an existing and a future path.
    const auto mem = host::mem_total();
    ASSERT_TRUE(mem);
    EXPECT_GT(*mem, 64ull << 20);
    TempDir dir;
    EXPECT_TRUE(host::free_bytes(dir.file("")));
    EXPECT_EQ(host::free_bytes(dir.file("not/yet/there")).has_value(), true);
}

}  // namespace
}  // namespace blkrig
