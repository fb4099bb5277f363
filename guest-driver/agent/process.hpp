// Child processes of PID 1 with deadlines: each step runs in one (so a step
// that hangs can be abandoned; fork keeps the mount namespace, so a mount
// made by a step is seen by the next), and so do the final sync and the
// watchdog.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

namespace blkrig::agent {

using Clock = std::chrono::steady_clock;

// Runs fn in a forked child that _exits with fn's value (1 if it throws).
pid_t spawn(const std::function<int()>& fn);

// The child's wait status, or nothing if it is still running at `deadline`.
std::optional<int> wait_until(pid_t pid, Clock::time_point deadline);

// SIGKILL, then up to `grace` for the exit. A child stuck in an
// uninterruptible wait (I/O to a device that does not answer) may outlive
// this; it is left behind.
void kill_child(pid_t pid, std::chrono::milliseconds grace);

// "exited with status 1", "killed by SIGBUS".
std::string describe_status(int status);

// fn in a child, killed if it takes longer than `limit`; false then.
bool run_bounded(const std::function<int()>& fn, std::chrono::milliseconds limit);

// A child that powers the guest off after `budget`, in case the agent hangs
// somewhere no other deadline covers.
void start_watchdog(std::chrono::seconds budget);

}  // namespace blkrig::agent
