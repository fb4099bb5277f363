// Guest-side tracing with tracefs: the mpage functions (function tracer,
// filtered) and block tracepoints, copied to the events port at the end.
#pragma once

#include "port.hpp"
#include "report.hpp"
#include "agent_core/run_spec.hpp"

#include <string>
#include <vector>

namespace blkrig::agent {

struct TracingSetup {
    std::vector<std::string> functions_traced;
    std::vector<std::string> functions_missing;
    std::vector<uint64_t> filter_lines;  // Hello::filter_lines
    std::string filter_hint = "none";    // Hello::filter_hint
    std::vector<std::string> events;
    std::vector<std::string> events_missing;
};

// Sets the trace clock to "mono" (so trace timestamps and the steps'
// t_start_ns/t_end_ns are one clock), the buffer size, the function filter,
// the tracer and the events; clears the buffer and turns tracing on.
TracingSetup start_tracing(const TraceSpec& spec, Reporter& rep);

void stop_tracing(Reporter& rep);

// /sys/kernel/tracing/trace as it is, to the events port.
void copy_trace(Port& events, Reporter& rep);

}  // namespace blkrig::agent
