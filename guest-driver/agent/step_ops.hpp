// What each step op does. Runs in the step's child process; fills the
// result's op-specific fields and, on failure, the failing call and errno.
#pragma once

#include "agent_core/result.hpp"
#include "agent_core/run_spec.hpp"
#include "sys.hpp"

#include <map>
#include <string>
#include <vector>

namespace blkrig::agent {

// Descriptors named by open steps, held by PID 1 and inherited by each
// step's child.
using NamedFds = std::map<std::string, UniqueFd>;

// Returns the descriptor an open step made (for the parent to keep), else -1.
int run_op(const Step& s, const RunSpec& spec, const NamedFds& fds, StepResult& r);

// FIEMAP, or FIBMAP block by block where the filesystem has no FIEMAP.
// Lengths and addresses in bytes. Fills r.extents or fails r.
void map_extents(const std::string& path, StepResult& r);

}  // namespace blkrig::agent
