// Step expectations: what the scenario said each step must return, checked
// against what the guest agent reported. Pure, so the verdict logic is unit
// tested without a VM.
#pragma once

#include "scenario/scenario.hpp"

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace blkrig::checks {

struct Check {
    std::string what;      // "ret", "errno", "bytes", "sha256"
    std::string expected;
    std::string got;
    bool ok = false;
};

struct StepVerdict {
    size_t index = 0;  // scenario step index
    std::string op;
    std::string path;  // the step's path, if it has one
    int line = 0;
    bool ran = false;  // the agent reported it
    bool ok = false;   // ran and every check held
    std::vector<Check> checks;
    nlohmann::json result;  // the agent's result line
};

// results: the agent's step results keyed by scenario step index.
// file_xxh128: for expect.sha256 = "file", the file's XXH3-128 by guest
// path ("/mnt/f1.bin"), which the read's own XXH3-128 must equal (a check
// named "content"). A literal expect.sha256 is checked against the SHA-256
// the agent then reports (a check named "sha256").
std::vector<StepVerdict> check_steps(const scenario::Scenario& sc, const std::map<size_t, nlohmann::json>& results,
                                     const std::map<std::string, std::string>& file_xxh128);

// "step 2 (read /mnt/f1.bin, line 14): errno expected EIO, got 0 ()"
std::string describe_failure(const StepVerdict& v);

nlohmann::json to_json(const StepVerdict& v);

}  // namespace blkrig::checks
