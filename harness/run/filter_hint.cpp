#include "run/filter_hint.hpp"

#include "agent_core/run_spec.hpp"


#include <system_error>

namespace blkrig::run {

namespace fs = std::filesystem;
using nlohmann::json;

CacheKey filter_hint_key(const fs::path& kernel_dir, const std::vector<std::string>& modules, const std::vector<std::string>& functions) {
    CacheKey key("ftrace-filter");
    key.file(kernel_dir / "release").stamp(kernel_dir / "modules" / "modules.dep");
    for (const auto& m : modules) key.text("module " + m);
    for (const auto& f : functions) key.text("function " + f);
    return key;
}

std::optional<json> load_filter_hint(const CacheKey& key, const json& run_spec) {
    const fs::path f = kept_file("ftrace-filter", key);
    const auto text = read_kept(f);
    if (!text) return std::nullopt;
    try {
        json hint = json::parse(*text);
        json spec = run_spec;
        spec["trace"]["filter_hint"] = hint;
        (void)agent::parse_run_spec(spec.dump());  // the agent's parser: what it refuses, it never gets
        return hint;
    } catch (const std::exception&) {
        std::error_code ec;
        fs::remove(f, ec);  // broken: the next boot reads the list and writes it again
        return std::nullopt;
    }
}

void save_filter_hint(const CacheKey& key, const json& hello) {
    const fs::path f = kept_file("ftrace-filter", key);
    if (f.empty() || !hello.is_object()) return;
    const auto lines = hello.find("filter_lines");
    if (lines == hello.end() || !lines->is_array() || lines->empty() || hello.value("filter_hint", "") == "used") return;
    const json hint = {{"lines", *lines},
                       {"selected", hello.value("functions_traced", json::array())},
                       {"missing", hello.value("functions_missing", json::array())}};
    keep_beside_cache(f, hint.dump() + "\n");
}

}  // namespace blkrig::run
