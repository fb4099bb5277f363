// A scenario against this host's limits: a disk past the free space of the
// run folder's filesystem and a guest past the host's memory are named with
// the scenario's line and where the limit comes from; unknown limits pass.
#include "run/host_limits.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace blkrig::run {
namespace {

scenario::Scenario big(const char* disk, const char* memory) {
    return scenario::parse_scenario(fmt::format("[disk]\nsize = \"{}\"\n[guest]\nmemory = \"{}\"\n[[steps]]\nop = \"sync\"\n", disk, memory), "big.toml");
}

TEST(HostLimits, DiskPastTheFreeSpaceAndMemoryPastTheHostAreNamed) {
    const HostFacts host{uint64_t{4} << 30, uint64_t{10} << 30, "/runs/r"};  // 4 GiB of RAM, 10 GiB free
    EXPECT_TRUE(host_limit_problems(big("10G", "4G"), host).empty());  // exactly at both limits
    const auto p = host_limit_problems(big("999999G", "999999G"), host);
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(p[0], "big.toml:2: disk.size is 1023998976 MiB, more than the 10240 MiB free on the filesystem holding the run folder /runs/r "
                    "(statvfs): make disk.size smaller, or give --out on a filesystem with room");
    EXPECT_EQ(p[1], "big.toml:4: guest.memory is 1023998976 MiB, more than this host's 4096 MiB (MemTotal in /proc/meminfo): make guest.memory "
                    "smaller");
    EXPECT_EQ(host_limit_problems(big("11G", "1G"), host).size(), 1u);
    EXPECT_EQ(host_limit_problems(big("1G", "5G"), host).size(), 1u);
}

TEST(HostLimits, UnknownLimitsPassAndThisHostHasFacts) {
    EXPECT_TRUE(host_limit_problems(big("999999G", "999999G"), HostFacts{}).empty());
    const HostFacts here = read_host_facts("runs/not-yet-made");
    ASSERT_TRUE(here.mem_total);
    ASSERT_TRUE(here.free_bytes);
    EXPECT_FALSE(host_limit_problems(big("999999G", "128M"), here).empty());
}

}  // namespace
}  // namespace blkrig::run
