// What PID 1 does to the test disk between boot and step 0, so that the
// steps start from the state a scenario describes: a freshly booted guest
// with nothing of the disk in its page cache (docs/architecture.md,
// "Before the steps").
#pragma once

#include "agent_core/result.hpp"
#include "agent_core/run_spec.hpp"

namespace blkrig::agent {

// The extent check (when the spec asks for it) on a read-only mount of its
// own, then the disk's page cache dropped and counted through disk_fd (the
// disk, opened by the caller). Never throws: what failed is in the result.
BeforeSteps prepare_disk(const RunSpec& spec, int disk_fd);

}  // namespace blkrig::agent
