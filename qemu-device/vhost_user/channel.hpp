// Moving vhost-user messages over a Unix stream socket, with the file
// descriptors that ride along as SCM_RIGHTS.
#pragma once

#include "vhost_user/message.hpp"

#include <optional>

namespace blkrig::vhost_user {

// Next message, or nullopt when the peer closed the connection cleanly
// between messages. Throws ProtocolError on a malformed or cut-short message.
std::optional<Message> receive(int sock);

// Throws ProtocolError when the peer is gone.
void send_bytes(int sock, std::span<const uint8_t> bytes);
// The same, with file descriptors riding along on the first byte (at most
// kMaxFds): GET_INFLIGHT_FD's reply from a back end; a front end's mem
// table, ring eventfds and inflight fd.
void send_with_fds(int sock, std::span<const uint8_t> bytes, std::span<const int> fds);
inline void send_with_fd(int sock, std::span<const uint8_t> bytes, int fd) { send_with_fds(sock, bytes, {&fd, 1}); }

}  // namespace blkrig::vhost_user
