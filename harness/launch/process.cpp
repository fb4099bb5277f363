#include "launch/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <deque>
#include <thread>
#include <utility>

namespace blkrig::launch {

namespace {
sigset_t launcher_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
    return set;
}
}  // namespace

namespace {
volatile sig_atomic_t g_interrupt = 0;
void on_interrupt(int sig) {
    if (!g_interrupt) g_interrupt = sig;
}
}  // namespace

void catch_interrupts() {
    struct sigaction sa{};
    sa.sa_handler = on_interrupt;
    sa.sa_flags = SA_RESTART;  // the run notices at its next step; calls in flight carry on
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, nullptr);
}

int interrupted_by() { return g_interrupt; }

void note_interrupt(int sig) {
    if (!g_interrupt) g_interrupt = sig;
}

namespace {
bool pid_alive(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

// The pid in "PREFIX<pid>..." , or 0.
pid_t pid_after(const std::string& name, std::string_view prefix) {
    if (name.rfind(prefix, 0) != 0) return 0;
    pid_t pid = 0;
    for (size_t i = prefix.size(); i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])); ++i) pid = pid * 10 + (name[i] - '0');
    return pid;
}
}  // namespace

size_t reap_stale_temp(const std::filesystem::path& tmp) {
    namespace fs = std::filesystem;
    size_t reaped = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(tmp, ec)) {
        const std::string name = e.path().filename().string();
        if (name.rfind("blkrig-", 0) != 0) continue;
        struct stat st{};
        if (::lstat(e.path().c_str(), &st) != 0 || st.st_uid != ::geteuid()) continue;
        pid_t owner = 0;
        if (S_ISDIR(st.st_mode) && name.size() == 13) {  // mkdtemp's blkrig-XXXXXX
            std::ifstream in(e.path() / "owner");
            long pid = 0;
            if (!(in >> pid)) continue;  // not ours, or still being made
            owner = static_cast<pid_t>(pid);
        } else if (S_ISREG(st.st_mode)) {
            owner = pid_after(name, "blkrig-tool-");
        } else if (S_ISSOCK(st.st_mode)) {
            owner = pid_after(name, "blkrig-ctl-");
        }
        if (owner <= 0 || pid_alive(owner)) continue;
        std::error_code rec;
        fs::remove_all(e.path(), rec);
        if (!rec) ++reaped;
    }
    return reaped;
}

int make_signal_fd() {
    sigset_t set = launcher_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    const int fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0) throw LaunchError(fmt::format("signalfd: {}", std::strerror(errno)));
    return fd;
}

Child::Child(std::string name, const std::vector<std::string>& argv, const std::string& log_path, bool own_group, int pass_fd)
    : name_(std::move(name)), own_group_(own_group) {
    // No log path: the child keeps this process's stdin/stdout/stderr (an
    // interactive console).
    const bool inherit = log_path.empty();
    const int log_fd = inherit ? -1 : ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (!inherit && log_fd < 0) throw LaunchError(fmt::format("cannot open log {}: {}", log_path, std::strerror(errno)));
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    int err_pipe[2];
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw LaunchError(fmt::format("pipe: {}", std::strerror(errno)));
    pid_ = ::fork();
    if (pid_ < 0) {
        const int e = errno;
        if (log_fd >= 0) ::close(log_fd);
        ::close(null_fd);
        throw LaunchError(fmt::format("fork for {}: {}", name_, std::strerror(e)));
    }
    if (pid_ == 0) {
        // Child: only async-signal-safe calls until exec.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (own_group) ::setpgid(0, 0);
        if (::getppid() != parent) ::_exit(127);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (!inherit) {
            ::dup2(null_fd, 0);
            ::dup2(log_fd, 1);
            ::dup2(log_fd, 2);
        }
        // Whatever this process inherited or opened (a caller's fds, locks,
        // sockets) closes at exec; err_pipe is CLOEXEC already.
        ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
        if (pass_fd >= 0) ::fcntl(pass_fd, F_SETFD, 0);
        ::execvp(args[0], args.data());
        const int e = errno;
        [[maybe_unused]] auto n = ::write(err_pipe[1], &e, sizeof e);
        ::_exit(127);
    }
    if (own_group) ::setpgid(pid_, pid_);  // also here: terminate() may come before the child's own call
    ::close(err_pipe[1]);
    if (log_fd >= 0) ::close(log_fd);
    ::close(null_fd);
    int exec_errno = 0;
    const ssize_t n = ::read(err_pipe[0], &exec_errno, sizeof exec_errno);
    ::close(err_pipe[0]);
    if (n == sizeof exec_errno) {
        int st;
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
        throw LaunchError(fmt::format("cannot run {} ({}): {}", name_, argv[0], std::strerror(exec_errno)));
    }
}

Child::~Child() { terminate(std::chrono::milliseconds(2000)); }

Child::Child(Child&& o) noexcept
    : name_(std::move(o.name_)), pid_(std::exchange(o.pid_, -1)), own_group_(o.own_group_), status_(o.status_) {}

Child& Child::operator=(Child&& o) noexcept {
    if (this != &o) {
        terminate(std::chrono::milliseconds(2000));
        name_ = std::move(o.name_);
        pid_ = std::exchange(o.pid_, -1);
        own_group_ = o.own_group_;
        status_ = o.status_;
    }
    return *this;
}

bool Child::poll() {
    if (pid_ <= 0) return true;
    if (status_) return true;
    int st;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) status_ = st;
    return status_.has_value();
}

std::string Child::describe_exit() const {
    if (!status_) return "still running";
    if (WIFEXITED(*status_)) return fmt::format("exited with {}", WEXITSTATUS(*status_));
    if (WIFSIGNALED(*status_)) return fmt::format("killed by signal {} ({})", WTERMSIG(*status_), strsignal(WTERMSIG(*status_)));
    return "ended";
}

bool Child::wait_for(std::chrono::milliseconds limit) {
    if (poll()) return true;
    // A pidfd is readable once the child exits: no polling interval to wait
    // out (a run stops two children on its way out). Without one, 1 ms polls.
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        if (poll()) break;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) break;
        if (pidfd >= 0) {
            pollfd p{pidfd, POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    if (pidfd >= 0) ::close(pidfd);
    return status_.has_value();
}

void Child::terminate(std::chrono::milliseconds grace) {
    if (pid_ <= 0 || poll()) return;
    const pid_t target = own_group_ ? -pid_ : pid_;
    ::kill(target, SIGTERM);
    wait_for(grace);
    // The group's other members (subshells) may outlive its leader.
    ::kill(target, SIGKILL);
    int st;
    if (!status_ && ::waitpid(pid_, &st, 0) == pid_) status_ = st;
}

ToolResult run_tool(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
    // The pid in the name lets a later blkrig reap it if this one is killed.
    std::string name = fmt::format("/tmp/blkrig-tool-{}-XXXXXX", ::getpid());
    char* tmpl = name.data();
    const int fd = ::mkstemp(tmpl);
    if (fd < 0) throw LaunchError(fmt::format("mkstemp: {}", std::strerror(errno)));
    ::close(fd);
    struct Unlink {
        const char* path;
        ~Unlink() { ::unlink(path); }
    } unlink_output{tmpl};
    ToolResult r;
    {
        Child c(argv.empty() ? "tool" : argv[0], argv, tmpl, true);
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!c.wait_for(std::chrono::milliseconds(100)) && std::chrono::steady_clock::now() < deadline && !interrupted_by()) {
        }
        c.terminate(std::chrono::milliseconds(1000));
        if (c.status() && WIFEXITED(*c.status())) r.exit_code = WEXITSTATUS(*c.status());
    }
    std::ifstream in(tmpl);
    r.output.assign((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return r;
}

std::string tail_lines(const std::string& path, size_t n) {
    std::ifstream in(path);
    if (!in) return "";
    std::deque<std::string> lines;
    std::string line;
    while (std::getline(in, line)) {
        lines.push_back(line);
        if (lines.size() > n) lines.pop_front();
    }
    std::string out;
    for (const auto& l : lines) out += "    " + l + "\n";
    return out;
}

}  // namespace blkrig::launch
