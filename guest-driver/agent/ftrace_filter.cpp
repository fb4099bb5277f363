#include "ftrace_filter.hpp"

#include <fnmatch.h>

#include <set>
#include <unordered_set>

namespace blkrig::agent {

namespace {

std::vector<std::string_view> function_names(std::string_view text) {
    std::vector<std::string_view> names;
    while (!text.empty()) {
        const auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        const auto end = line.find_first_of(" \t");
        line = line.substr(0, end);
        if (!line.empty()) names.push_back(line);
    }
    return names;
}

bool is_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

}  // namespace

FilterSelection select_filters(std::string_view available, const std::vector<std::string>& wanted) {
    const std::vector<std::string_view> names = function_names(available);
    const std::unordered_set<std::string_view> known(names.begin(), names.end());
    FilterSelection out;
    std::set<std::string, std::less<>> taken;
    auto take = [&](std::string_view name) {
        if (taken.insert(std::string(name)).second) out.selected.emplace_back(name);
    };
    for (const std::string& w : wanted) {
        bool matched = false;
        if (is_glob(w)) {
            for (const std::string_view name : names) {
                if (::fnmatch(w.c_str(), std::string(name).c_str(), 0) == 0) {
                    take(name);
                    matched = true;
                }
            }
        } else if (known.count(w)) {
            take(w);
            matched = true;
        }
        if (!matched) out.missing.push_back(w);
    }
    return out;
}

}  // namespace blkrig::agent
