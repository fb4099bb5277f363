// Child processes the rig starts (blkrig-device, QEMU). Each child dies with
// the launcher (PR_SET_PDEATHSIG), so even a killed launcher leaves nothing
// running; a Child that goes out of scope is terminated and reaped.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace blkrig::launch {

struct LaunchError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Child {
public:
    Child() = default;
    // stdout and stderr go to log_path (appended; a symlink there is
    // refused); stdin is /dev/null. An empty log_path keeps the caller's
    // stdin, stdout and stderr. No other descriptor of this process reaches
    // the child but pass_fd (kept at its number, for a child told so).
    // own_group: the child leads a process group of its own, and terminate()
    // signals the whole group (a script's subshells and pipelines too). Not
    // for a child that uses the terminal (it would be in the background).
    Child(std::string name, const std::vector<std::string>& argv, const std::string& log_path, bool own_group = false,
          int pass_fd = -1);
    ~Child();
    Child(Child&& o) noexcept;
    Child& operator=(Child&& o) noexcept;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }
    const std::string& name() const { return name_; }
    bool running() const { return pid_ > 0 && !status_; }

    // Non-blocking reap; true if the child has exited (now or before).
    bool poll();
    // Wait status as from waitpid, once exited.
    std::optional<int> status() const { return status_; }
    std::string describe_exit() const;  // "exited with 0", "killed by signal 9"

    // SIGTERM, wait up to grace, then SIGKILL; reaps.
    void terminate(std::chrono::milliseconds grace);
    // Waits up to `limit` for the child to exit (reaped then); true if it has.
    bool wait_for(std::chrono::milliseconds limit);

private:
    std::string name_;
    pid_t pid_ = -1;
    bool own_group_ = false;
    std::optional<int> status_;
};

// Runs a short tool to completion (stdout and stderr captured), killing it
// after timeout. Returns its exit status (-1 if it was killed or did not run).
struct ToolResult {
    int exit_code = -1;
    std::string output;
};
ToolResult run_tool(const std::vector<std::string>& argv, std::chrono::seconds timeout);

// Blocks SIGCHLD/SIGINT/SIGTERM/SIGHUP in the calling thread and returns a
// signalfd for them; children get a clean signal mask.
int make_signal_fd();

// SIGINT, SIGTERM and SIGHUP are recorded, not fatal, from here on (until
// make_signal_fd blocks them for a signalfd): a run stops at its next step
// and still writes what it had. interrupted_by(): the first such signal, 0 if none.
void catch_interrupts();
int interrupted_by();
// Records a signal that arrived through a signalfd, as the handler would.
void note_interrupt(int sig);

// The rig's temporary folders and files (/tmp/blkrig-XXXXXX with an owner
// file, /tmp/blkrig-tool-PID-*, /tmp/blkrig-ctl-PID.sock) whose owner pid is
// gone, owned by this uid: left by a blkrig killed outright. Removed; returns
// how many.
size_t reap_stale_temp(const std::filesystem::path& tmp = "/tmp");

// Last n lines of a text file (for error messages), or "" if unreadable.
std::string tail_lines(const std::string& path, size_t n);

}  // namespace blkrig::launch
