// The marker rule: step i of a run is bracketed by marker 2i, read just
// before it, and marker 2i+1, read just after (docs/trace-format.md,
// "Markers"). The agent reads them, the run arms faults by them, and the
// model, the checks and the report find a step's requests between them.
#pragma once

#include <cstdint>

namespace blkrig::markers {

constexpr uint64_t before_step(uint64_t step) { return 2 * step; }
constexpr uint64_t after_step(uint64_t step) { return 2 * step + 1; }
constexpr uint64_t needed_for(uint64_t steps) { return 2 * steps; }  // marker blocks a run of N steps reads

// The markers a step's result names, or the rule's when it names none (-1).
constexpr int64_t begin_of(int64_t recorded, int64_t step) { return recorded >= 0 ? recorded : 2 * step; }
constexpr int64_t end_of(int64_t recorded, int64_t step) { return recorded >= 0 ? recorded : 2 * step + 1; }

}  // namespace blkrig::markers
