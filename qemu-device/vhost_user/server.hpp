// Accepting front ends on a listening Unix socket, one session at a time
// (vhost-user has one front end per back-end socket). A session that ends,
// cleanly or because the front end misbehaved, is followed by the next one.
#pragma once

#include "common/fd.hpp"
#include "common/paths.hpp"
#include "virtio/device.hpp"
#include "virtio/queue_worker.hpp"

#include <stdexcept>
#include <string>

namespace blkrig::vhost_user {

struct ServerError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Creates a listening socket at path. It appears at path only once it
// listens (bound under a temporary name, then linked), so a launcher that
// waits for the path never races the listen. A stale socket is replaced;
// anything else there (a file, a live socket) is a PathError.
UniqueFd listen_at(const std::string& path);

struct ServeOptions {
    bool once = false;                       // return after the first session ends
    virtio::QueueOptions queues;             // one thread for all queues or a thread per queue; polling
};

// Serves sessions on a listening socket until stop_fd becomes readable
// (with once: until the first session ends; ServerError if on an error).
void serve_listening(int listen_fd, int stop_fd, virtio::Device& dev, ServeOptions opts);

// Serves one already-connected socket (--fd given a connected socket);
// ServerError if the session ended on an error.
void serve_connected(UniqueFd conn, int stop_fd, virtio::Device& dev, ServeOptions opts);

bool is_listening_socket(int fd);

}  // namespace blkrig::vhost_user
