// A crash state checked by a guest kernel, not only by fsck on the host: a
// `blkrig run` of a small check scenario on the state's disk (mount, read
// each promised file, umount), as cheap as a boot gets here (no extent
// check, no guest trace). The kernel's own recovery (ext4's journal replay
// at mount) decides what the files hold (docs/crash.md).
#pragma once

#include "scenario/scenario.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace blkrig::crash {

// The first n lines of a tool's output, for a message.
std::string first_lines(const std::string& text, size_t n);

// The check scenario for sc, as TOML: sc's [disk] and name, needs
// disk-from, steps mount, a read of each promised path, umount.
std::string check_scenario_text(const scenario::Scenario& sc);

struct GuestRead {
    std::string path;
    int ret = -1;
    std::string error;  // an errno name, "" when ret is 0
    uint64_t bytes = 0;
    std::string xxh128;  // of what the guest read
};

struct BootResult {
    // Empty when the guest ran the check's steps; otherwise why it did not
    // (the rig's failure, not the state's: no boot, a timeout, bad input).
    std::string failure;
    int exit = -1;            // blkrig run's exit code
    int mount_ret = -1;
    std::string mount_error;  // an errno name when the mount failed
    std::vector<GuestRead> reads;
    std::filesystem::path run_dir;     // the check run's folder
    std::filesystem::path disk_after;  // the disk as the guest left it

    const GuestRead* read_of(const std::string& path) const;
};

struct BootSpec {
    std::filesystem::path blkrig;      // this executable
    std::filesystem::path check_toml;  // check_scenario_text, written
    std::string kernel;                // empty: the scenario's
    std::chrono::seconds timeout{300};
};

// Boots on dir/disk.img (dir/extents.json beside it) into dir/boot;
// read_paths: the promised paths, in the order the check scenario reads them.
BootResult boot_state(const BootSpec& b, const std::filesystem::path& dir, const std::vector<std::string>& read_paths);

// The command a user runs to repeat that boot by hand.
std::string boot_command(const BootSpec& b, const std::filesystem::path& dir);

}  // namespace blkrig::crash
