// The guest agent's results.jsonl as the host reads it (docs/agent-protocol.md,
// "Results"). A pure parser: each line is checked against the protocol's
// record types and field types before anything uses it, so the run's checks
// and the model never meet a field of the wrong type. The guest runs kernels
// under test and may write anything: a line that is not a record is a problem
// naming its line, never an exception.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace blkrig::model {

struct StepLine {
    size_t line = 0;  // 1-based
    uint64_t index = 0;
    nlohmann::json record;  // the whole step record, fields checked
};

struct AgentResults {
    nlohmann::json hello;         // null: no hello record
    nlohmann::json before_steps;  // null: no before_steps record
    std::vector<StepLine> steps;  // in the order sent
    std::vector<std::string> errors;  // the `what` of each error record
    bool done = false;
    // "line 3: step record: \"bytes\" must be an unsigned integer, got \"x\"";
    // lines cut short or not records at all.
    std::vector<std::string> problems;
};

AgentResults parse_results(std::string_view text);

}  // namespace blkrig::model
