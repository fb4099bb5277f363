#include "tool.hpp"

#include "disk_image.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace blkrig::image {

namespace {

std::string command_line(const std::vector<std::string>& argv) {
    std::string s;
    for (const auto& a : argv) {
        if (!s.empty()) s += ' ';
        s += a;
    }
    return s;
}

struct Pipe {
    int fd[2] = {-1, -1};
    Pipe() {
        if (::pipe2(fd, O_CLOEXEC) != 0) throw ToolError(fmt::format("pipe: {}", std::strerror(errno)));
    }
    ~Pipe() {
        for (int f : fd)
            if (f >= 0) ::close(f);
    }
    void close_write() {
        ::close(fd[1]);
        fd[1] = -1;
    }
};

// Debian's tools live in sbin, which a non-root PATH may lack.
std::string search_path() {
    const char* p = std::getenv("PATH");
    return std::string(p != nullptr && *p != '\0' ? p : "/usr/bin:/bin") + ":/usr/sbin:/sbin";
}

std::string find_program(const std::string& prog, const std::string& path) {
    if (prog.find('/') != std::string::npos) return prog;
    size_t start = 0;
    while (start <= path.size()) {
        size_t end = path.find(':', start);
        if (end == std::string::npos) end = path.size();
        std::string dir = path.substr(start, end - start);
        std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + prog;
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        start = end + 1;
    }
    throw ToolError(fmt::format("{} not found (install it: dosfstools, mtools, exfatprogs, e2fsprogs)", prog));
}

}  // namespace

ToolResult run_tool(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    // Fixed locale so messages we parse (debugfs, mshowfat) look the same
    // everywhere; the pager off so debugfs never waits for a terminal.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
        std::string_view v(*e);
        if (v.starts_with("LC_ALL=") || v.starts_with("LANG=") || v.starts_with("DEBUGFS_PAGER=") ||
            v.starts_with("MTOOLS_SKIP_CHECK=") || v.starts_with("PATH="))
            continue;
        env_strings.emplace_back(v);
    }
    for (const char* e : {"LC_ALL=C", "DEBUGFS_PAGER=__none__", "MTOOLS_SKIP_CHECK=1"}) env_strings.emplace_back(e);
    const std::string path = search_path();
    env_strings.push_back("PATH=" + path);
    for (const auto& e : env) env_strings.push_back(e);
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);

    if (argv.empty()) throw ToolError("run_tool: empty command");
    const std::string program = find_program(argv[0], path);
    std::vector<std::string> args = argv;
    std::vector<char*> argp;
    for (auto& a : args) argp.push_back(a.data());
    argp.push_back(nullptr);

    Pipe out, err;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out.fd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err.fd[1], 2);
    // The tool starts with no signal blocked and default actions: blkrig-mkdisk
    // takes SIGTERM on a thread of its own (mkdisk.cpp), which a child must not
    // inherit, or stopping the run would not stop it.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, stop;
    sigemptyset(&none);
    sigemptyset(&stop);
    for (const int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop, s);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &stop);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, program.c_str(), &fa, &attr, argp.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) throw ToolError(fmt::format("cannot run {}: {}", argv[0], std::strerror(rc)));
    out.close_write();
    err.close_write();

    ToolResult result;
    pollfd fds[2] = {{out.fd[0], POLLIN, 0}, {err.fd[0], POLLIN, 0}};
    std::string* sinks[2] = {&result.out, &result.err};
    int open_fds = 2;
    char buf[65536];
    while (open_fds > 0) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int k = 0; k < 2; ++k) {
            if (fds[k].fd < 0 || fds[k].revents == 0) continue;
            ssize_t n = ::read(fds[k].fd, buf, sizeof buf);
            if (n > 0) {
                sinks[k]->append(buf, static_cast<size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                fds[k].fd = -1;
                --open_fds;
            }
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return result;
}

ToolResult run_checked(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    ToolResult r = run_tool(argv, env);
    if (r.exit_code != 0) {
        std::string msg = r.err.empty() ? r.out : r.err;
        while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
        throw ToolError(fmt::format("{} failed (exit {}): {}", command_line(argv), r.exit_code, msg));
    }
    return r;
}

}  // namespace blkrig::image
