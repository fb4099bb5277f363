// guest-events.jsonl (the guest's ftrace, one JSON object per line, written
// by parse_ftrace) read into compact structs. A run of a million requests
// has several million guest events, so the hot path does not build a
// nlohmann::json per line: a flat scanner reads the few fields the model
// needs and falls back to nlohmann only for lines it cannot scan (nested
// values, escapes in a field it keeps). Pure: text in, events out.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace blkrig::model {

enum class GuestKind : uint8_t {
    function,
    bio_queue,
    bio_backmerge,
    bio_frontmerge,
    getrq,
    rq_insert,
    rq_issue,
    rq_requeue,
    rq_complete,
    split,
    plug,
    unplug,
    other,     // an event the model does not interpret (name in GuestEvent::name)
    unparsed,  // a line parse_ftrace could not read; "LOST n EVENTS" lines land here
};

// The operation a block event's rwbs names (blk_fill_rwbs): a leading F is
// a preflush, then R W D DE F N, then F (FUA) A S M.
enum class GuestOp : uint8_t { none, read, write, flush, discard, secure_erase, other };

struct Rwbs {
    GuestOp op = GuestOp::none;
    bool preflush = false;
    bool fua = false;
};
Rwbs parse_rwbs(std::string_view rwbs);

struct GuestEvent {
    double ts = 0;            // seconds, CLOCK_MONOTONIC (the agent sets trace_clock mono)
    uint64_t sector = 0;
    uint64_t nsect = 0;       // block events with "+ n"
    uint64_t new_sector = 0;  // block_split: where the remainder starts
    uint64_t offset = 0;      // byte offset of the line in the file, to hand back the full object
    uint32_t line = 0;        // 1-based line number
    uint32_t name = 0;        // index into GuestEvents::names: the function (function events) or the event name
    uint16_t dev = 0;         // index into GuestEvents::names (0: "")
    int16_t error = 0;        // block_rq_complete
    int16_t cpu = -1;         // the CPU ftrace recorded it on, -1 if the line has none
    GuestKind kind = GuestKind::other;
    GuestOp op = GuestOp::none;
    bool preflush = false;
    bool has_range = false;   // sector and nsect were present
    char rwbs[8] = {};
    std::string_view rwbs_view() const;
};

struct GuestEvents {
    GuestEvents() = default;
    GuestEvents(GuestEvents&&) = default;
    GuestEvents& operator=(GuestEvents&&) = default;
    GuestEvents(const GuestEvents&) = delete;  // ids_ holds views into names
    GuestEvents& operator=(const GuestEvents&) = delete;

    std::vector<GuestEvent> events;
    std::deque<std::string> names;  // interned strings (stable addresses); names[0] == ""
    std::vector<std::pair<uint32_t, std::string>> bad_lines;  // line and why, for the first few lines that are not JSON objects
    uint64_t bad_line_count = 0;
    uint64_t lost_events = 0;  // from "[LOST n EVENTS]" lines
    bool lost_unknown = false; // a LOST line without a count
    uint32_t lines = 0;        // lines read (blank ones included)

    uint32_t intern(std::string_view s);
    const std::string& name(uint32_t id) const { return names[id]; }

private:
    std::unordered_map<std::string_view, uint32_t> ids_;  // views into names
};

// base_offset: where text starts in the file (GuestEvent::offset counts
// from the file's start). Line numbers count from text's start.
// reserve_bytes: make room for the events of this much text (more than
// text's when more will be appended), so appending does not move them.
GuestEvents parse_guest_events(std::string_view text, uint64_t base_offset = 0, size_t reserve_bytes = 0);

// more, parsed from the text right after into's, appended to into (names
// re-interned, line numbers continued). Lets two threads share a large file.
void append(GuestEvents& into, GuestEvents&& more);

}  // namespace blkrig::model
