// Runs the steps, each in a child process with the step timeout, between
// its two marker reads, and reports each result.
#pragma once

#include "report.hpp"
#include "agent_core/run_spec.hpp"
#include "step_ops.hpp"

#include <cstddef>

namespace blkrig::agent {

class StepRunner {
public:
    StepRunner(const RunSpec& spec, int disk_fd, Reporter& rep) : spec_(spec), disk_fd_(disk_fd), rep_(rep) {}

    // Every step, stopping after one that timed out. Returns the number of
    // step records sent.
    size_t run_all();

private:
    StepResult run_one(size_t index, bool& timed_out);
    [[noreturn]] void child(size_t index, int sock);
    int64_t read_marker(uint64_t index, std::string& error) const;

    const RunSpec& spec_;
    int disk_fd_;
    Reporter& rep_;
    NamedFds fds_;
};

}  // namespace blkrig::agent
