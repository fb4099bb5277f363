#include "vhost_user/server.hpp"

#include "common/log.hpp"
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
        throw ServerError(fmt::format("socket path {} is too long ({} bytes with the temporary suffix; the limit is {})", path,
                                      tmp.size(), sizeof addr.sun_path - 1));
    std::memcpy(addr.sun_path, tmp.c_str(), tmp.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) throw ServerError(fmt::format("socket: {}", std::strerror(errno)));
    ::unlink(tmp.c_str());
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw ServerError(fmt::format("cannot bind {}: {}", tmp, std::strerror(errno)));
    ::chmod(tmp.c_str(), 0600);
    if (::listen(fd.get(), 4) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw ServerError(fmt::format("cannot listen on {}: {}", tmp, std::strerror(e)));
    }
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
        ::unlink(tmp.c_str());
        throw ServerError(fmt::format("{} exists and is not a socket; refusing to replace it", path));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw ServerError(fmt::format("cannot create socket {}: {}", path, std::strerror(e)));
    }
    return fd;
}

bool is_listening_socket(int fd) {
    int v = 0;
    socklen_t len = sizeof v;
    return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v != 0;
}

void serve_connected(UniqueFd conn, int stop_fd, virtio::Device& dev, ServeOptions opts) {
    Session s(dev, std::move(conn), opts.loop);
    s.serve(stop_fd);
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
        bool stopped;
        {
            Session s(dev, std::move(conn), opts.loop);
            stopped = s.serve(stop_fd);
        }
        if (stopped || opts.once) return;
        log(LogLevel::info, "waiting for the next front end");
    }
}

}  // namespace blkrig::vhost_user
