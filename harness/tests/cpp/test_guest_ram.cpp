// launch::detail::guest_ram: with CAP_SYS_ADMIN, an unnamed file on a tmpfs
// of its own that takes huge pages and is mounted nowhere; without it (a
// user namespace of our own here), a memfd, saying why; QEMU's -object
// for each.
#include "launch/boot_common.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>

namespace blkrig::launch::detail {
namespace {

std::string read(const char* p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), {}};
}

TEST(GuestRam, ATmpfsFileWithHugePagesMountedNowhere) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (CAP_SYS_ADMIN) to mount a tmpfs";
    const std::string mounts_before = read("/proc/self/mountinfo");
    const GuestRam ram = guest_ram(64);
    ASSERT_TRUE(ram.fd.valid()) << ram.why;
    EXPECT_EQ(ram.backend(), "tmpfs-huge");
    struct statfs st {};
    ASSERT_EQ(::fstatfs(ram.fd.get(), &st), 0);
    EXPECT_EQ(st.f_type, static_cast<decltype(st.f_type)>(TMPFS_MAGIC));
    // Mounted nowhere: nothing to unmount after a crash.
    EXPECT_EQ(read("/proc/self/mountinfo"), mounts_before);
    // What QEMU does with it: reopen by /proc/self/fd, size it, map it.
    const std::string obj = guest_ram_object(ram, 64);
    const std::string path = "/proc/self/fd/" + std::to_string(ram.fd.get());
    EXPECT_EQ(obj, "memory-backend-file,id=mem,size=64M,share=on,mem-path=" + path + ",align=2M");
    const int again = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(again, 0);
    ASSERT_EQ(::ftruncate(again, 64 << 20), 0);
    // 2 MiB-aligned, as QEMU maps it with align=2M.
    constexpr size_t kSize = 64 << 20, kHuge = 2 << 20;
    void* area = ::mmap(nullptr, kSize + kHuge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(area, MAP_FAILED);
    auto* at = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(area) + kHuge - 1) & ~(kHuge - 1));
    void* m = ::mmap(at, kSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, again, 0);
    ASSERT_EQ(m, at);
    at[0] = 1;
    // The fault mapped a huge page (unless the host denies them to tmpfs).
    const std::string smaps = read("/proc/self/smaps");
    const size_t entry = smaps.find(fmt::format("{:x}-", reinterpret_cast<uintptr_t>(at)));
    ASSERT_NE(entry, std::string::npos);
    const size_t pmd = smaps.find("ShmemPmdMapped:", entry);
    ASSERT_NE(pmd, std::string::npos);
    if (read("/sys/kernel/mm/transparent_hugepage/shmem_enabled").find("[deny]") == std::string::npos) {
        EXPECT_EQ(std::stoul(smaps.substr(pmd + 15)), 2048U) << smaps.substr(entry, 1200);
    }
    ::munmap(area, kSize + kHuge);
    ::close(again);
    // The tmpfs is sized for the guest's memory, not the host's half.
    ASSERT_EQ(::fstatfs(ram.fd.get(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.f_blocks) * st.f_bsize, uint64_t{66} << 20);
}

TEST(GuestRam, WithoutTheRightToMountAMemfdAndWhy) {
    // A user namespace of our own: no CAP_SYS_ADMIN over our mounts.
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (::unshare(CLONE_NEWUSER) != 0) ::_exit(77);
        const GuestRam ram = guest_ram(64);
        const bool ok = !ram.fd.valid() && ram.backend() == "memfd" && ram.why.find("fsopen(tmpfs)") != std::string::npos &&
                        guest_ram_object(ram, 64) == "memory-backend-memfd,id=mem,size=64M,share=on";
        ::_exit(ok ? 0 : 1);
    }
    int st = 0;
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) GTEST_SKIP() << "no user namespaces here";
    EXPECT_EQ(WEXITSTATUS(st), 0);
}

}  // namespace
}  // namespace blkrig::launch::detail
