// Presenting a device trace: one JSON object or text line per record, and a
// short summary of what reached the device.
#pragma once

#include "trace/reader.hpp"

#include <nlohmann/json.hpp>

#include <map>
#include <string>

namespace blkrig::model {

nlohmann::json to_json(const trace::RequestRecord& r);
nlohmann::json to_json(const trace::EventRecord& e);
std::string to_text(const trace::RequestRecord& r, uint64_t t0);

struct OpStats {
    uint64_t count = 0;
    uint64_t bytes = 0;
    uint64_t errors = 0;  // status other than ok
    uint64_t min_bytes = UINT64_MAX;
    uint64_t max_bytes = 0;
};

struct Summary {
    std::map<std::string, OpStats> ops;  // by op label
    uint64_t requests = 0;
    uint64_t malformed = 0;
    uint64_t events = 0;
    uint64_t markers = 0;
    uint64_t faults = 0;  // requests a fault rule fired on
    uint64_t powered_off = 0;  // requests failed because the power was cut (no rule)
    uint64_t latency_p50_ns = 0;
    uint64_t latency_p99_ns = 0;
    uint64_t latency_max_ns = 0;
    uint64_t span_ns = 0;  // first arrival to last completion
    std::string incomplete;  // why the trace is incomplete, empty if complete
    uint64_t restarts = 0;     // device processes that continued the trace after one died
    uint64_t resubmitted = 0;  // requests resumed from the inflight region
    uint64_t unfinished = 0;   // in flight, never completed, when the device ended (no latency, not an error)
    std::vector<uint64_t> seq_duplicates;  // seqs with more than one record (the first few)
    uint64_t seq_duplicate_count = 0;
    std::vector<uint64_t> seq_missing;     // seqs below the highest with no record (the first few)
    uint64_t seq_missing_count = 0;
    uint64_t bad_records = 0;  // impossible records, not counted above (trace::Trace::bad)
    std::string first_bad;     // the first one described, empty if none
};

// Every seq a device gave out should end as exactly one request or marker
// record, across restarts too (a resubmitted request keeps its seq; an
// unfinished record beside a completed one of its seq is not a second). Fills
// the seq_* fields of s.
void account_seqs(const trace::Trace& t, Summary& s);

Summary summarize(const trace::Trace& t);
nlohmann::json to_json(const Summary& s);
std::string to_text(const Summary& s);

}  // namespace blkrig::model
