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

// The values are the trace's fault record `action` field: never renumber.
enum class ActionKind : uint16_t {
    ioerr = 1,    // complete with VIRTIO_BLK_S_IOERR, store untouched
    unsupp = 2,   // complete with VIRTIO_BLK_S_UNSUPP, store untouched
    delay = 3,    // execute, complete after a fixed or random time
    hold = 4,     // execute, complete when released over the control plane
    reorder = 5,  // execute, complete after N later requests of the queue
    torn = 6,     // write only the first N sectors, then IOERR (or OK with torn=N:ok)
    corrupt = 7,  // XOR a byte of the payload: after a read, or before a write reaches the store
    lie = 8,      // report success without doing it (a dropped write, a flush that flushes nothing)
    // 9 is the trace's power_off (no rule).
    crash = 10,   // the device process kills itself (SIGKILL) with the request in flight: a back-end crash
};
const char* to_string(ActionKind k);

struct Action {
    ActionKind kind = ActionKind::ioerr;
    uint64_t delay_ns = 0;      // delay: the time, or the shortest of a random range
    uint64_t delay_max_ns = 0;  // delay: the longest of a random range (0: fixed)
    uint32_t count = 0;         // reorder: later completions to wait for; torn: sectors written
    bool torn_ok = false;       // torn: report success
    uint64_t offset = 0;        // corrupt: byte offset in the request's payload
    uint8_t mask = 0xff;        // corrupt: XOR mask
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
    // Only within this window of device time (ns since the device started).
    uint64_t time_from_ns = 0;
    uint64_t time_to_ns = UINT64_MAX;
    // Only when the queue has at least this many requests outstanding
    // (this one included): 0 or 1 means any depth.
    uint32_t min_depth = 0;
    Action action;
};

struct RuleError {
    size_t column = 0;  // 1-based, into the rule text
    std::string message;
};

std::variant<Rule, RuleError> parse_rule(std::string_view text);

// Why a rule could never fire on a device of capacity_sectors sectors (the
// marker region included) and num_queues queues: its sector range starts at
// or past the end, or its queue= is not one of them. Empty when it can fire.
std::optional<std::string> never_fires(const Rule& r, uint64_t capacity_sectors, uint32_t num_queues);

// The canonical text of a rule (parses back to the same rule).
std::string to_text(const Rule& r);

}  // namespace blkrig::faults
