// Were the knobs applied? The scenario's [device] and [guest] knobs against
// what the guest kernel reads back (the agent's hello: /sys/block/vda/...,
// the CPUs online; the mount step: /proc/self/mounts). Pure: a knob asked
// for and not found is a problem naming the knob, what was asked and what
// the guest has; the run turns problems into exit 3 (the rig did not set up
// what the scenario describes). docs/scenarios.md, "How each knob is read back".
#pragma once

#include "scenario/scenario.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace blkrig::run {

struct KnobReading {
    std::string knob;       // "guest.scheduler", "device.logical_block_size"
    std::string asked;      // as the scenario gives it (or its default)
    std::string found;      // what the guest has, "" if it could not be read
    std::string read_from;  // "/sys/block/vda/queue/scheduler", "/proc/self/mounts", ...
    bool applied = false;
    std::string problem;    // when not applied: the whole sentence
};

struct KnobReport {
    std::vector<KnobReading> knobs;
    std::vector<std::string> problems;  // one per knob not applied
};

// hello: the agent's hello record (null if none came: nothing is checked).
// mount_result: the first mount step's result record, or null when no mount
// step ran (mount_options are then not checked).
KnobReport check_knobs(const scenario::Scenario& sc, const nlohmann::json& hello, const nlohmann::json& mount_result);

// guest-knobs.json: every reading, and the raw attributes the agent sent.
nlohmann::json to_json(const KnobReport& r, const nlohmann::json& hello);

// ftrace's ring buffer per guest CPU in KiB, what run.json's trace.buffer_kb
// asks the agent for: [guest] trace_buffer, else sized from the steps.
int64_t trace_buffer_kb(const scenario::Scenario& sc);

}  // namespace blkrig::run
