// The crash model's power cut, as the device performs it: by control call,
// or by itself at a marker (--power-cut), with a report of what was lost.
#pragma once

#include "store/write_log.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace blkrig::blk {

// A power cut the device performs by itself when the guest reads a marker
// (the end of a step), so a scenario can cut at an exact point.
struct PowerCutPlan {
    int64_t at_marker = -1;  // -1: none
    store::CutMode mode = store::CutMode::drop_all;
    uint64_t seed = 0;
    double share = 0.5;           // drop_random: the chance each unflushed write is lost
    std::string report_path;      // where the CutReport is written as JSON, may be empty
};

// The cut's report: mode, seed, share, and each write dropped or kept.
nlohmann::json cut_report_json(const store::CutReport& rep, store::CutMode mode, uint64_t seed, double share);
// The one-line summary logged and traced as the power_cut event.
std::string cut_summary(const store::CutReport& rep, store::CutMode mode);
// Writes the report where the plan asks; false (errno set) if it could not.
bool write_cut_report(const std::string& path, const nlohmann::json& report);

}  // namespace blkrig::blk
