#include "faults/rule_file.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace blkrig::faults {

std::string RuleFileError::describe(std::string_view file) const {
    return fmt::format("{}:{}:{}: {} (in '{}')", file, line, column, message, text);
}

namespace {

constexpr const char* kCallShape = R"(expected a fault.add call, {"jsonrpc":"2.0","method":"fault.add","params":{"rule":"RULE"}})";

// One line of save_config output: the rule text of its fault.add call, or an error.
std::variant<std::string, RuleFileError> call_rule(std::string_view line, size_t n) {
    auto bad = [&](size_t col, std::string msg) { return RuleFileError{n, col, std::move(msg), std::string(line)}; };
    nlohmann::json call;
    try {
        call = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
        return bad(e.byte ? e.byte : 1, fmt::format("not JSON: {}", e.what()));
    } catch (const nlohmann::json::exception& e) {  // a number too large for a double
        return bad(1, fmt::format("not JSON: {}", e.what()));
    }
    // Compared as JSON values: value("method", "") throws when it is not a string.
    if (!call.is_object() || !call.contains("method") || call["method"] != "fault.add" || !call.contains("params") || !call["params"].is_object() ||
        !call["params"].contains("rule") || !call["params"]["rule"].is_string())
        return bad(1, kCallShape);
    return call["params"]["rule"].get<std::string>();
}

}  // namespace

std::variant<std::vector<FileRule>, RuleFileError> parse_rule_file(std::string_view content) {
    std::vector<FileRule> out;
    size_t n = 0, pos = 0;
    while (pos < content.size()) {
        size_t eol = content.find('\n', pos);
        if (eol == std::string_view::npos) eol = content.size();
        std::string_view line = content.substr(pos, eol - pos);
        pos = eol + 1;
        ++n;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        const size_t first = line.find_first_not_of(" \t");
        if (first == std::string_view::npos) continue;
        std::string text;
        size_t column_base = 0;  // where the rule text starts in the line, for plain rules
        if (line[first] == '{') {
            auto r = call_rule(line, n);
            if (auto* e = std::get_if<RuleFileError>(&r)) return *e;
            text = std::get<std::string>(r);
            // The rule's own columns point into the JSON string when it is there verbatim.
            const size_t at = line.find(nlohmann::json(text).dump());
            column_base = at == std::string_view::npos ? 0 : at + 1;
        } else {
            const std::string_view body = line.substr(0, line.find('#'));
            if (body.find_first_not_of(" \t") == std::string_view::npos) continue;
            text = std::string(body);
        }
        auto parsed = parse_rule(text);
        if (auto* e = std::get_if<RuleError>(&parsed))
            return RuleFileError{n, column_base + e->column, e->message, std::string(line)};
        out.push_back({n, std::get<Rule>(parsed)});
    }
    return out;
}

}  // namespace blkrig::faults
