// The function filter an earlier boot chose, kept for the next boot of the
// same kernel with the same modules and the same wanted functions: the
// agent then sets those lines of available_filter_functions and reads the
// filter back, instead of reading the whole list (0.18 s under TCG;
// docs/performance.md, "Turnaround"). Kept beside the build cache.
#pragma once

#include "run/build_cache.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>

namespace blkrig::run {

// What identifies the list's numbering: the kernel, its modules (in load
// order) and the functions wanted.
CacheKey filter_hint_key(const std::filesystem::path& kernel_dir, const std::vector<std::string>& modules,
                         const std::vector<std::string>& functions);

// The hint as run.json's trace.filter_hint, or nullopt when there is none
// (or no cache). A hint the agent's own parser would refuse is dropped.
std::optional<nlohmann::json> load_filter_hint(const CacheKey& key, const nlohmann::json& run_spec);

// Keeps what hello says was set by line: filter_lines, functions_traced,
// functions_missing. Nothing when hello has no lines. Failures are ignored:
// the next boot then reads the list again.
void save_filter_hint(const CacheKey& key, const nlohmann::json& hello);

}  // namespace blkrig::run
