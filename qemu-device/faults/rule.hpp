// Fault rules: which requests a fault applies to and what it does. Rule
// text is a small documented grammar (docs/faults.md) parsed by a pure
// function; a wrong rule is an error naming the column and what was expected.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace blkrig::faults {

// Request kinds a rule can match, as a bit set.
enum OpBit : uint8_t {
    kOpRead = 1,
    kOpWrite = 2,
    kOpFlush = 4,
    kOpDiscard = 8,
    kOpWriteZeroes = 16,
    kOpOther = 32,
    kOpAny = 63,
};
uint8_t op_bit(uint32_t virtio_type);

enum class ActionKind : uint16_t { ioerr = 1, unsupp = 2, delay = 3 };
const char* to_string(ActionKind k);

struct Action {
    ActionKind kind = ActionKind::ioerr;
    uint64_t delay_ns = 0;  // delay
};

struct Rule {
    uint8_t ops = kOpAny;
    uint64_t first_sector = 0;            // a request overlapping [first, last] matches
    uint64_t last_sector = UINT64_MAX;
    std::optional<uint16_t> queue;
    // Which matching requests fire (all 0: every one). 1-based counts.
    uint64_t nth = 0;    // only the nth
    uint64_t every = 0;  // every k-th
    uint64_t first = 0;  // the first N
    double probability = 1.0;  // of those, this share, drawn from seed
    uint64_t seed = 0;
    // Armed only once the device has seen this marker (a step boundary:
    // the agent reads marker 2i+1 after step i). -1: armed from the start.
    int64_t after_marker = -1;
    // Disarmed for good once the device has seen this marker (the agent
    // reads 2i before step i). -1: never.
    int64_t until_marker = -1;
    Action action;
};

struct RuleError {
    size_t column = 0;  // 1-based, into the rule text
    std::string message;
};

std::variant<Rule, RuleError> parse_rule(std::string_view text);

// The canonical text of a rule (parses back to the same rule).
std::string to_text(const Rule& r);

}  // namespace blkrig::faults
