// Whether a scenario fits this host, checked before anything is built or
// booted: its disk must fit the free space of the filesystem holding the
// run folder (the image lands there and the device writes it), its guest
// memory the host's memory (QEMU backs it with a shared memfd). A value past
// either fails only later, after minutes of work, as a rig failure.
#pragma once

#include "scenario/scenario.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace blkrig::run {

struct HostFacts {
    std::optional<uint64_t> mem_total;   // bytes, /proc/meminfo MemTotal
    std::optional<uint64_t> free_bytes;  // bytes, statvfs of the run folder's filesystem
    std::filesystem::path out_dir;       // for the message
};

HostFacts read_host_facts(const std::filesystem::path& out_dir);

// Each value that cannot fit, as "FILE:LINE: what, and where the limit
// comes from"; empty when it fits (or a fact is unknown). Pure.
std::vector<std::string> host_limit_problems(const scenario::Scenario& sc, const HostFacts& h);

}  // namespace blkrig::run
