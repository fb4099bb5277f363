// Reading a trace file back. parse_trace is pure (bytes in, Trace out) so
// it can be fuzzed; read_trace adds the file I/O.
#pragma once

#include "trace/format.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace blkrig::trace {

struct ReadError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Entry {  // one record, in file order
    RecordKind kind;
    size_t index;  // into Trace::requests / events / dropped / markers
};

struct DroppedRecord {
    uint64_t count;
    uint64_t t_ns;
};

// A whole record whose fields the device could not have written: a queue the
// header does not have, a completed request outside the capacity, a
// completion before its submission, an unknown status. Such a record is
// kept out of the Trace's lists, so nothing downstream sees the impossible
// value, and listed here.
struct BadRecord {
    size_t offset = 0;             // of the record in the file
    RecordKind kind{};
    std::optional<uint64_t> seq;   // request, marker and fault records
    std::string field;             // as in docs/trace-format.md, e.g. "queue"
    std::string message;           // what is impossible about it
    // "record at byte 4096 (request seq 17): queue: ..."
    std::string describe() const;
};

struct Trace {
    FileHeader header{};
    std::string config_json;
    std::vector<RequestRecord> requests;
    std::vector<EventRecord> events;
    std::vector<DroppedRecord> dropped;
    std::vector<MarkerRecord> markers;
    std::vector<FaultRecord> faults;
    std::vector<Entry> order;
    std::optional<EndBody> end;
    std::string truncation;  // why the file stopped early, empty if it did not
    std::vector<BadRecord> bad;  // impossible records, in file order

    uint64_t dropped_total() const;
    // A complete trace ends with an end record, lost nothing, and holds
    // exactly the requests the end record counts.
    bool complete() const;
    std::string incompleteness() const;  // empty when complete
};

// Throws ReadError for input that is not a blkrig trace at all (bad magic,
// unsupported version, header cut short, a header no device writes). A body
// that stops mid-record is returned with `truncation` set; every record is
// checked against the header, and impossible ones land in `bad`.
Trace parse_trace(std::span<const uint8_t> bytes);
Trace read_trace(const std::string& path);

}  // namespace blkrig::trace
