#include "run/extent_memo.hpp"


#include <system_error>

namespace blkrig::run {

namespace fs = std::filesystem;
using nlohmann::json;

CacheKey extent_memo_key(const std::string& disk_key, const fs::path& kernel_dir, const std::vector<std::string>& modules, const json& check) {
    CacheKey key("extent-check");
    key.text("disk " + disk_key).text(check.dump());
    key.file(kernel_dir / "release").file(kernel_dir / "vmlinuz").stamp(kernel_dir / "modules" / "modules.dep");
    for (const auto& m : modules) key.text("module " + m);
    return key;
}

std::optional<json> load_extent_memo(const CacheKey& key) {
    const fs::path f = kept_file("extent-check", key);
    const auto text = read_kept(f);
    if (!text) return std::nullopt;
    try {
        json r = json::parse(*text);
        if (r.is_object() && r.value("error", std::string("?")).empty() && r.contains("files") && r["files"].is_array()) return r;
    } catch (const json::exception&) {
    }
    std::error_code ec;
    fs::remove(f, ec);  // broken: the next boot checks in the guest and writes it again
    return std::nullopt;
}

void save_extent_memo(const CacheKey& key, const json& record) {
    const fs::path f = kept_file("extent-check", key);
    if (f.empty() || !record.is_object() || record.value("cached", false)) return;
    keep_beside_cache(f, record.dump() + "\n");
}

void forget_extent_memo(const CacheKey& key) {
    const fs::path f = kept_file("extent-check", key);
    std::error_code ec;
    if (!f.empty()) fs::remove(f, ec);
}

}  // namespace blkrig::run
