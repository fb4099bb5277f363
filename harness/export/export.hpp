// Exporting a device trace to other tools' formats: blkparse-like text,
// Chrome/Perfetto trace-event JSON, and CSV. Pure functions of a
// trace::Trace; docs/trace-format.md ("Exports") describes each format.
#pragma once

#include "trace/reader.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

namespace blkrig::exporter {

enum class Format { blkparse, perfetto, csv };

// "blkparse", "perfetto" or "csv"; nullopt for anything else.
std::optional<Format> parse_format(std::string_view name);

struct Options {
    // blkparse's device column. 254,0 is what a guest's first virtio-blk
    // disk (vda) usually gets; the device itself cannot know.
    uint32_t major = 254;
    uint32_t minor = 0;
};

// "MAJ,MIN" as blkparse prints it; nullopt when it is not two numbers.
std::optional<Options> parse_device(std::string_view maj_min);

// blkparse's RWBS letters for a virtio-blk request type (the kernel's
// blk_fill_rwbs): R, W, F (flush), D (discard), DE (secure erase),
// WZ (write zeroes), N (none: get_id, get_lifetime, unknown types).
std::string rwbs(uint32_t type);
// The error blkparse shows on a C line: what Linux's virtio_blk turns the
// status into (0, -EIO, -EOPNOTSUPP).
int blk_error(uint8_t status);

// One line per action, sorted by time: Q and D at arrival, C at completion,
// `m` message lines for markers, faults, events and dropped records.
std::string to_blkparse(const trace::Trace& t, const Options& o = {});
// {"traceEvents": [...], "displayTimeUnit": "ns", "otherData": {...}}.
nlohmann::json to_perfetto(const trace::Trace& t);
// A header row, then one row per request in arrival (seq) order.
std::string to_csv(const trace::Trace& t);

void write(std::ostream& out, const trace::Trace& t, Format f, const Options& o = {});

}  // namespace blkrig::exporter
