// What the guest kernel made of the knobs: the disk's sysfs attributes and
// the options a mount ended up with, read back so the host can compare them
// with what the scenario asked for (harness/run/knobs.hpp).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace blkrig::agent {

// /sys/block/<disk>/ attributes, keyed by their path under it
// ("queue/logical_block_size", "ro", "mq/0/cpu_list", "mq/0/nr_tags"); an
// attribute the kernel lacks is left out.
std::vector<std::pair<std::string, std::string>> read_disk_sysfs(const std::string& disk);

// /sys/devices/system/cpu/online, e.g. "0-1"; "" if unreadable.
std::string cpus_online();

// The options field of the /proc/self/mounts line for mountpoint (the last
// one: the mount on top); nothing if it is not mounted.
std::optional<std::string> mount_options_of(const std::string& mountpoint);

}  // namespace blkrig::agent
