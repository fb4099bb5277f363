// Running the filesystem tools: argv only (no shell), stdin from /dev/null,
// stdout and stderr captured.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace blkrig::image {

struct ToolResult {
    int exit_code = -1;  // 128 + signal when killed
    std::string out;
    std::string err;
};

// env: extra NAME=VALUE entries on top of ours. Throws ToolError if the tool
// cannot be started.
ToolResult run_tool(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});

// As run_tool, but a non-zero exit throws ToolError with the command line and
// the tool's stderr (or stdout, when stderr is empty).
ToolResult run_checked(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});

}  // namespace blkrig::image
