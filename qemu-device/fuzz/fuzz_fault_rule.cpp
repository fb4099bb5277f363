// Fuzzes the fault rule grammar: any text parses or yields a RuleError with
// a column inside the text; a parsed rule's canonical text parses again to
// the same canonical text. As a --faults file, any text loads or yields a
// RuleFileError on a line inside it.
#include "faults/rule.hpp"
#include "faults/rule_file.hpp"

#include <algorithm>
#include <cstdlib>
#include <string_view>

using namespace blkrig::faults;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto file = parse_rule_file(text);
    if (auto* e = std::get_if<RuleFileError>(&file)) {
        const auto lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
        if (e->line == 0 || e->line > lines || e->column == 0) std::abort();
    }
    auto r = parse_rule(text);
    if (auto* e = std::get_if<RuleError>(&r)) {
        if (e->column == 0 || e->column > size + 1) std::abort();
        return 0;
    }
    const std::string canon = to_text(std::get<Rule>(r));
    auto again = parse_rule(canon);
    if (!std::holds_alternative<Rule>(again) || to_text(std::get<Rule>(again)) != canon) std::abort();
    return 0;
}
