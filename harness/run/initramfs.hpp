// A run's own files (run.json, vm.conf) added to its copy of the cached
// initramfs as a second newc archive; the guest kernel unpacks
// the archives of an initramfs one after the other. The cached part depends
// only on the kernel, its modules, the programs and /init, so scenarios that
// share those share it, and what a run writes for itself never makes the
// next run build again. docs/matrix.md, "The build cache".
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace blkrig::run {

struct InitramfsFile {
    std::filesystem::path source;  // a regular file on the host
    std::string dest;              // an absolute path in the guest
};

// Appends the files, each with the directories above it (mode 755, owner 0,
// mtime 0, in path order, so the same files give the same bytes), to the
// initramfs at `image`, first padding it with zeros to the 4-byte boundary
// where the kernel looks for the next archive. nullopt on success, else what
// went wrong, naming the file; `image` is then left as it was.
std::optional<std::string> append_to_initramfs(const std::filesystem::path& image, const std::vector<InitramfsFile>& files);

}  // namespace blkrig::run
