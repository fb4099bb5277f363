#include "vhost_user/channel.hpp"

#include <sys/socket.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

namespace blkrig::vhost_user {

namespace {

// Reads exactly n bytes; returns bytes read before EOF.
size_t read_full(int sock, uint8_t* p, size_t n) {
    size_t got = 0;
    while (got < n) {
        const ssize_t r = ::recv(sock, p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            throw ProtocolError(fmt::format("reading from the front end: {}", std::strerror(errno)));
        }
        if (r == 0) break;
        got += static_cast<size_t>(r);
    }
    return got;
}

}  // namespace

std::optional<Message> receive(int sock) {
    uint8_t hdr[kHeaderSize];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    iovec iov{hdr, sizeof hdr};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    ssize_t n;
    do {
        n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw ProtocolError(fmt::format("reading from the front end: {}", std::strerror(errno)));
    if (n == 0) return std::nullopt;

    Message m;
    // Take ownership of every fd first, so none leaks whatever happens next.
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; ++i) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                m.fds.emplace_back(fd);
            }
        }
    }
    if (mh.msg_flags & MSG_CTRUNC) throw ProtocolError(fmt::format("message carries more than {} file descriptors", kMaxFds));
    if (static_cast<size_t>(n) < kHeaderSize) {
        const size_t more = read_full(sock, hdr + n, kHeaderSize - static_cast<size_t>(n));
        if (static_cast<size_t>(n) + more < kHeaderSize)
            throw ProtocolError(fmt::format("connection closed inside a message header ({} of 12 bytes)", static_cast<size_t>(n) + more));
    }
    m.hdr = parse_header(hdr);
    m.payload.resize(m.hdr.size);
    if (m.hdr.size > 0) {
        const size_t got = read_full(sock, m.payload.data(), m.hdr.size);
        if (got < m.hdr.size)
            throw ProtocolError(fmt::format("{} ({}): connection closed after {} of {} payload bytes", request_name(m.hdr.request),
                                            m.hdr.request, got, m.hdr.size));
    }
    return m;
}

void send_bytes(int sock, std::span<const uint8_t> bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
        const ssize_t r = ::send(sock, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR) continue;
            throw ProtocolError(fmt::format("writing to the socket: {}", std::strerror(errno)));
        }
        off += static_cast<size_t>(r);
    }
}

void send_with_fds(int sock, std::span<const uint8_t> bytes, std::span<const int> fds) {
    if (fds.size() > kMaxFds) throw ProtocolError(fmt::format("{} file descriptors in one message; at most {}", fds.size(), kMaxFds));
    if (fds.empty()) return send_bytes(sock, bytes);
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    ssize_t r;
    do r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0) throw ProtocolError(fmt::format("writing to the socket: {}", std::strerror(errno)));
    // The fd went with the first byte; the rest goes as plain bytes.
    if (static_cast<size_t>(r) < bytes.size()) send_bytes(sock, bytes.subspan(static_cast<size_t>(r)));
}

}  // namespace blkrig::vhost_user
