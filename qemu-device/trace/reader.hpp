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

    uint64_t dropped_total() const;
    // A complete trace ends with an end record, lost nothing, and holds
    // exactly the requests the end record counts.
    bool complete() const;
    std::string incompleteness() const;  // empty when complete
};

// Throws ReadError for input that is not a blkrig trace at all (bad magic,
// unsupported version, header cut short). A body that stops mid-record is
// returned with `truncation` set.
Trace parse_trace(std::span<const uint8_t> bytes);
Trace read_trace(const std::string& path);

}  // namespace blkrig::trace
