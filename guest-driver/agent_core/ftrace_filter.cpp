#include "agent_core/ftrace_filter.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <bitset>
#include <cstring>
#include <set>
#include <unordered_map>
#include <utility>

namespace blkrig::agent {

namespace {

// Calls fn(line_number, name) for each line; the name is the line's first
// word. memchr rather than find_first_of: the list has ~45000 lines and TCG
// makes every instruction count.
template <typename Fn>
void for_each_function(std::string_view text, Fn fn) {
    const char* p = text.data();
    const char* const end = p + text.size();
    for (size_t line = 1; p < end; ++line) {
        const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
        if (nl == nullptr) nl = end;
        const char* space = static_cast<const char*>(std::memchr(p, ' ', static_cast<size_t>(nl - p)));
        const std::string_view name(p, static_cast<size_t>((space ? space : nl) - p));
        if (!name.empty()) fn(line, name);
        p = nl == end ? end : nl + 1;
    }
}

bool is_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

}  // namespace

FilterSelection select_filters(std::string_view available, const std::vector<std::string>& wanted) {
    // Matches per wanted entry, so the result follows the order wanted.
    std::vector<std::vector<std::pair<std::string_view, size_t>>> found(wanted.size());
    std::unordered_map<std::string_view, std::vector<size_t>> exact;
    std::bitset<256> lengths;  // of the exact names: most lines are skipped without hashing
    std::vector<size_t> globs;
    for (size_t i = 0; i < wanted.size(); ++i) {
        if (is_glob(wanted[i])) {
            globs.push_back(i);
        } else {
            exact[wanted[i]].push_back(i);
            lengths.set(std::min<size_t>(wanted[i].size(), 255));
        }
    }
    std::string name_z;
    for_each_function(available, [&](size_t line, std::string_view name) {
        if (lengths.test(std::min<size_t>(name.size(), 255))) {
            if (const auto it = exact.find(name); it != exact.end())
                for (const size_t i : it->second) found[i].emplace_back(name, line);
        }
        if (globs.empty()) return;
        name_z.assign(name);
        for (const size_t i : globs)
            if (::fnmatch(wanted[i].c_str(), name_z.c_str(), 0) == 0) found[i].emplace_back(name, line);
    });

    FilterSelection out;
    std::set<std::string_view> taken;
    std::set<size_t> lines;
    for (size_t i = 0; i < wanted.size(); ++i) {
        if (found[i].empty()) out.missing.push_back(wanted[i]);
        for (const auto& [name, line] : found[i]) {
            if (taken.insert(name).second) out.selected.emplace_back(name);
            lines.insert(line);
        }
    }
    out.lines.assign(lines.begin(), lines.end());
    return out;
}

std::vector<std::string> filter_names(std::string_view set_ftrace_filter) {
    std::vector<std::string> out;
    for_each_function(set_ftrace_filter, [&](size_t, std::string_view name) {
        if (name[0] != '#' && std::find(out.begin(), out.end(), name) == out.end()) out.emplace_back(name);
    });
    return out;
}

}  // namespace blkrig::agent
