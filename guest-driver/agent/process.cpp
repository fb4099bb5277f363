#include "process.hpp"

#include "sys.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace blkrig::agent {

pid_t spawn(const std::function<int()>& fn) {
    const pid_t pid = ::fork();
    if (pid < 0) throw SysError("fork", "a child", errno);
    if (pid > 0) return pid;
    int code = 1;
    try {
        code = fn();
    } catch (const std::exception& e) {
        say_error(std::string("child: ") + e.what());
    } catch (...) {
    }
    // _exit: no destructors or atexit handlers of PID 1's state in the child.
    ::_exit(code);
}

std::optional<int> wait_until(pid_t pid, Clock::time_point deadline) {
    // A pidfd becomes readable when the child exits: no polling loop.
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    for (;;) {
        int status = 0;
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (pidfd >= 0) ::close(pidfd);
            return status;
        }
        if (r < 0 && errno != EINTR) {
            if (pidfd >= 0) ::close(pidfd);
            return std::nullopt;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            if (pidfd >= 0) ::close(pidfd);
            return std::nullopt;
        }
        if (pidfd >= 0) {
            pollfd p{pidfd, POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left));
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(std::min<long long>(left, 5)));
        }
    }
}

void kill_child(pid_t pid, std::chrono::milliseconds grace) {
    ::kill(pid, SIGKILL);
    wait_until(pid, Clock::now() + grace);
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const char* name = ::sigabbrev_np(WTERMSIG(status));
        return name ? std::string("killed by SIG") + name : "killed by signal " + std::to_string(WTERMSIG(status));
    }
    return "wait status " + std::to_string(status);
}

bool run_bounded(const std::function<int()>& fn, std::chrono::milliseconds limit) {
    const pid_t pid = spawn(fn);
    if (wait_until(pid, Clock::now() + limit)) return true;
    kill_child(pid, std::chrono::milliseconds(500));
    return false;
}

void start_watchdog(std::chrono::seconds budget) {
    spawn([budget] {
        std::this_thread::sleep_for(budget);
        say_error("watchdog: the run did not end within " + std::to_string(budget.count()) + " s; powering off");
        ::reboot(RB_POWER_OFF);
        return 1;
    });
}

}  // namespace blkrig::agent
