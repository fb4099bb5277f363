// An extent check the guest passed, kept beside the build cache: the guest
// kernel's FIEMAP of the files of one disk image, which the next boot of the
// same kernel and modules on the same image would find again. That boot
// then skips the check's mount, FIEMAP and umount in the guest (some tens
// of milliseconds under TCG) and checks the kept record against the image's
// extents instead; `blkrig run --fresh-extent-check` runs it in the guest
// anyway. docs/scenarios.md, "What a run adds by itself".
#pragma once

#include "run/build_cache.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace blkrig::run {

// disk_key: the build cache's key of the image (its content follows from
// it); check: run.json's extent_check (file system type, files).
CacheKey extent_memo_key(const std::string& disk_key, const std::filesystem::path& kernel_dir, const std::vector<std::string>& modules,
                         const nlohmann::json& check);

// The guest's extent_check record an earlier boot passed with, or nullopt.
std::optional<nlohmann::json> load_extent_memo(const CacheKey& key);

// Keeps a record the run found right. Failures are ignored: the next boot
// then checks in the guest again.
void save_extent_memo(const CacheKey& key, const nlohmann::json& record);

// Drops a kept record that did not fit its image: the next boot checks in
// the guest again.
void forget_extent_memo(const CacheKey& key);

}  // namespace blkrig::run
