// Which kernel driver mounts a scenario's disk, and the modules it needs.
// ext2 images have two: fs/ext2 itself, built for a catalogue kernel by
// `fetch-debian --extra-modules ext2` as module ext2mpage (registered under
// that name because the built-in ext4 already owns "ext2"), or ext4's driver
// (CONFIG_EXT4_USE_FOR_EXT2), which reads through its own copy of mpage.
#pragma once

#include "scenario/scenario.hpp"

#include <filesystem>
#include <string>
#include <variant>
#include <vector>

namespace blkrig::run {

struct FsDriver {
    std::string fstype;                // mount -t; empty for a raw disk
    std::string driver;                // "ext2", "ext4", "vfat", ...: whose code reads the disk
    std::vector<std::string> modules;  // loaded before mounting
    std::string why;                   // how it was chosen, for verdict.json
};

// The module fetch-debian builds for ext2, under the kernel's modules/.
inline constexpr const char* kExt2Module = "ext2mpage";
std::filesystem::path ext2_module_path(const std::filesystem::path& kernel_dir);

// The driver for sc's disk on the kernel in kernel_dir, or an error naming
// the scenario line (guest.ext2_driver = "ext2" on a kernel without it).
std::variant<FsDriver, std::string> fs_driver(const scenario::Scenario& sc, const std::filesystem::path& kernel_dir,
                                              const std::string& kernel_name);

}  // namespace blkrig::run
