// Socket-path and same-file checks (common/paths.hpp).
#include "common/paths.hpp"

#include "common/fd.hpp"

#include <fmt/format.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace blkrig {

namespace fs = std::filesystem;

SocketPathState probe_socket_path(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return SocketPathState::absent;
    if (!S_ISSOCK(st.st_mode)) return SocketPathState::not_a_socket;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return SocketPathState::live_socket;  // cannot tell: do not touch it
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    // Non-blocking: a listener with a full backlog answers EAGAIN, and is alive.
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s.valid()) return SocketPathState::live_socket;
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return SocketPathState::live_socket;
    // ECONNREFUSED: bound by nobody (its program died); ENOENT: gone meanwhile.
    if (errno == ECONNREFUSED) return SocketPathState::stale_socket;
    if (errno == ENOENT) return SocketPathState::absent;
    return SocketPathState::live_socket;
}

std::optional<std::string> socket_path_problem(const std::string& option, const std::string& path) {
    switch (probe_socket_path(path)) {
    case SocketPathState::absent:
    case SocketPathState::stale_socket: return std::nullopt;
    case SocketPathState::live_socket:
        return fmt::format("{} {}: in use: a program accepts connections on this socket (stop it, or give another path)", option, path);
    case SocketPathState::not_a_socket:
        return fmt::format("{} {}: exists and is not a socket; refusing to replace it (remove it, or give another path)", option, path);
    }
    return std::nullopt;
}

void claim_socket_path(const std::string& option, const std::string& path) {
    if (auto why = socket_path_problem(option, path)) throw PathError(*why);
    if (probe_socket_path(path) == SocketPathState::stale_socket && ::unlink(path.c_str()) != 0 && errno != ENOENT)
        throw PathError(fmt::format("{} {}: cannot remove the stale socket there: {}", option, path, std::strerror(errno)));
}

OwnSocket own_socket(const std::string& path) {
    OwnSocket s{path};
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
        s.dev = st.st_dev;
        s.ino = st.st_ino;
    }
    return s;
}

void remove_own_socket(const OwnSocket& s) {
    struct stat st {};
    if (s.ino == 0 || ::lstat(s.path.c_str(), &st) != 0) return;
    if (S_ISSOCK(st.st_mode) && st.st_dev == s.dev && st.st_ino == s.ino) ::unlink(s.path.c_str());
}

std::optional<std::string> same_file_twice(const std::vector<std::pair<std::string, std::string>>& named) {
    struct Seen {
        const std::string* option;
        const std::string* path;
        fs::path canonical;
        bool has_inode;
        struct stat st;
    };
    std::vector<Seen> seen;
    for (const auto& [option, path] : named) {
        if (path.empty()) continue;
        Seen s{&option, &path, {}, false, {}};
        std::error_code ec;
        s.canonical = fs::weakly_canonical(fs::absolute(path, ec), ec);
        if (ec) s.canonical = fs::absolute(path).lexically_normal();
        s.has_inode = ::stat(path.c_str(), &s.st) == 0;
        if (s.has_inode && S_ISCHR(s.st.st_mode)) continue;  // /dev/null and the like take any number of writers
        for (const auto& o : seen) {
            const bool same_inode = s.has_inode && o.has_inode && s.st.st_dev == o.st.st_dev && s.st.st_ino == o.st.st_ino;
            if (same_inode || s.canonical == o.canonical)
                return fmt::format("{} and {} both name {}: give each its own file", *o.option, option,
                                   *o.path == path ? path : fmt::format("{} ({})", *o.path, path));
        }
        seen.push_back(std::move(s));
    }
    return std::nullopt;
}

}  // namespace blkrig
