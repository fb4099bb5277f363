// Which functions to write to set_ftrace_filter, and how.
//
// Writing a name the kernel does not have makes the write fail (EINVAL), and
// an empty filter with the function tracer on traces every function in the
// kernel; so the agent sets exactly the wanted functions the kernel lists in
// available_filter_functions and reports the rest. It sets them by line
// number in that list (ftrace's "index" form): matching a name makes the
// kernel look up every one of its ~45000 functions, which costs about 70 ms
// per name under TCG.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace blkrig::agent {

struct FilterSelection {
    std::vector<std::string> selected;  // each once, in the order wanted
    std::vector<size_t> lines;          // 1-based lines holding them, ascending (a name can be on several)
    std::vector<std::string> missing;   // wanted entries that matched nothing
};

// `available` is the text of available_filter_functions: one function per
// line, optionally followed by " [module]". Each wanted entry is a name or a
// glob (* ? [...]); a glob selects every matching function, in list order.
FilterSelection select_filters(std::string_view available, const std::vector<std::string>& wanted);

// The functions a set_ftrace_filter read lists, each once, in its order
// (none for "#### all functions enabled ####").
std::vector<std::string> filter_names(std::string_view set_ftrace_filter);

}  // namespace blkrig::agent
