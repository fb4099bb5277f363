// Host limits (common/host.hpp).
#include "common/host.hpp"

#include <sys/statvfs.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

namespace blkrig::host {

namespace fs = std::filesystem;

std::optional<uint64_t> parse_mem_total(std::string_view text) {
    // "MemTotal:       16303100 kB"
    constexpr std::string_view key = "MemTotal:";
    size_t at = 0;
    while (at < text.size()) {
        const size_t eol = std::min(text.find('\n', at), text.size());
        std::string_view line = text.substr(at, eol - at);
        at = eol + 1;
        if (line.substr(0, key.size()) != key) continue;
        line.remove_prefix(key.size());
        while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
        uint64_t kib = 0;
        const auto r = std::from_chars(line.data(), line.data() + line.size(), kib);
        if (r.ec != std::errc() || kib > UINT64_MAX / 1024) return std::nullopt;
        if (std::string_view(r.ptr, line.data() + line.size()) != " kB") return std::nullopt;
        return kib * 1024;
    }
    return std::nullopt;
}

std::optional<uint64_t> mem_total() {
    std::ifstream in("/proc/meminfo");
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_mem_total(ss.str());
}

std::optional<uint64_t> free_bytes(const fs::path& path) {
    std::error_code ec;
    fs::path p = fs::absolute(path, ec);
    if (ec) return std::nullopt;
    while (!fs::exists(p, ec) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
    struct statvfs v {};
    if (::statvfs(p.c_str(), &v) != 0) return std::nullopt;
    return static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
}

}  // namespace blkrig::host
