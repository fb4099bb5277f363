// Which names to write to set_ftrace_filter.
//
// Writing a name the kernel does not have makes the whole write fail
// (EINVAL), and an empty filter with the function tracer on traces every
// function in the kernel; so the agent sets exactly the wanted functions the
// kernel lists in available_filter_functions and reports the rest.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace blkrig::agent {

struct FilterSelection {
    std::vector<std::string> selected;  // to set, each once, in the order wanted
    std::vector<std::string> missing;   // wanted entries that matched nothing
};

// `available` is the text of available_filter_functions: one function per
// line, optionally followed by " [module]". Each wanted entry is a name or a
// glob (* ? [...]); a glob selects every matching function, in list order.
FilterSelection select_filters(std::string_view available, const std::vector<std::string>& wanted);

}  // namespace blkrig::agent
