// A file of fault rules (--faults FILE): one rule per line, '#' starts a
// comment; or the JSON-RPC fault.add calls that `save_config` writes, one
// per line, so a live device's rules replay into a new one. A pure parser:
// the device and `blkrig run` both check a file with it before anything
// starts, and a wrong line is an error naming its line and column.
#pragma once

#include "faults/rule.hpp"

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace blkrig::faults {

struct FileRule {
    size_t line = 0;  // 1-based
    Rule rule;
};

struct RuleFileError {
    size_t line = 0;    // 1-based
    size_t column = 0;  // 1-based, into the line
    std::string message;
    std::string text;   // the offending line

    // "FILE:LINE:COLUMN: message (in 'text')"
    std::string describe(std::string_view file) const;
};

std::variant<std::vector<FileRule>, RuleFileError> parse_rule_file(std::string_view content);

}  // namespace blkrig::faults
