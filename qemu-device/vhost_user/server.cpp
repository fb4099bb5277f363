#include "vhost_user/server.hpp"

#include "common/log.hpp"
#include "common/paths.hpp"
#include "vhost_user/session.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace blkrig::vhost_user {

UniqueFd listen_at(const std::string& path) {
    const std::string tmp = fmt::format("{}.{}", path, ::getpid());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (tmp.size() >= sizeof addr.sun_path)
        throw PathError(fmt::format("--socket-path {} is too long ({} bytes with the temporary suffix; the limit is {})", path,
                                    tmp.size(), sizeof addr.sun_path - 1));
    // Only nothing, or a dead program's socket, may be replaced.
    claim_socket_path("--socket-path", path);
    std::memcpy(addr.sun_path, tmp.c_str(), tmp.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) throw ServerError(fmt::format("socket: {}", std::strerror(errno)));
    if (probe_socket_path(tmp) == SocketPathState::stale_socket) ::unlink(tmp.c_str());  // an earlier process with our pid
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw ServerError(fmt::format("cannot bind {}: {}", tmp, std::strerror(errno)));
    ::chmod(tmp.c_str(), 0600);
    if (::listen(fd.get(), 4) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw ServerError(fmt::format("cannot listen on {}: {}", tmp, std::strerror(e)));
    }
    // link(), unlike rename(), fails if anything took the path meanwhile.
    if (::link(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        if (e == EEXIST) throw PathError(fmt::format("--socket-path {}: in use: another program created it just now", path));
        throw ServerError(fmt::format("cannot create socket {}: {}", path, std::strerror(e)));
    }
    ::unlink(tmp.c_str());
    return fd;
}

bool is_listening_socket(int fd) {
    int v = 0;
    socklen_t len = sizeof v;
    return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v != 0;
}

void serve_connected(UniqueFd conn, int stop_fd, virtio::Device& dev, ServeOptions opts) {
    Session s(dev, std::move(conn), opts.queues);
    s.serve(stop_fd);
    if (s.failed()) throw ServerError("the only session ended on an error (see above)");
}

void serve_listening(int listen_fd, int stop_fd, virtio::Device& dev, ServeOptions opts) {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    for (;;) {
        const int r = ::poll(fds, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            throw ServerError(fmt::format("poll on the listening socket: {}", std::strerror(errno)));
        }
        if (fds[1].revents) return;
        if (!(fds[0].revents & POLLIN)) continue;
        UniqueFd conn(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
        if (!conn.valid()) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            throw ServerError(fmt::format("accept: {}", std::strerror(errno)));
        }
        log(LogLevel::info, "front end connected");
        bool stopped, failed, probe;
        {
            Session s(dev, std::move(conn), opts.queues);
            stopped = s.serve(stop_fd);
            failed = s.failed();
            // A connection closed before its first message is someone
            // checking that the socket is alive, not a front end.
            probe = !stopped && !failed && s.messages() == 0;
        }
        if (stopped) return;
        if (opts.once && failed) throw ServerError("the front end's session ended on an error (see above)");
        if (opts.once && !probe) return;
        log(LogLevel::info, "waiting for the next front end");
    }
}

}  // namespace blkrig::vhost_user
