// Scenario sizes against this host (run/host_limits.hpp).
#include "run/host_limits.hpp"

#include "common/host.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace blkrig::run {

HostFacts read_host_facts(const std::filesystem::path& out_dir) { return {host::mem_total(), host::free_bytes(out_dir), out_dir}; }

std::vector<std::string> host_limit_problems(const scenario::Scenario& sc, const HostFacts& h) {
    std::vector<std::string> problems;
    const auto mib = [](uint64_t b) { return b >> 20; };
    if (h.free_bytes && sc.disk.size_bytes > *h.free_bytes)
        problems.push_back(fmt::format("{}:{}: disk.size is {} MiB, more than the {} MiB free on the filesystem holding the run folder {} "
                                       "(statvfs): make disk.size smaller, or give --out on a filesystem with room",
                                       sc.file, std::max(sc.disk.size_line, 1), mib(sc.disk.size_bytes), mib(*h.free_bytes),
                                       h.out_dir.string()));
    const uint64_t memory = uint64_t{sc.guest.memory_mb} << 20;
    if (h.mem_total && memory > *h.mem_total)
        problems.push_back(fmt::format("{}:{}: guest.memory is {} MiB, more than this host's {} MiB (MemTotal in /proc/meminfo): make "
                                       "guest.memory smaller",
                                       sc.file, std::max(sc.guest.memory_line, 1), sc.guest.memory_mb, mib(*h.mem_total)));
    return problems;
}

}  // namespace blkrig::run
