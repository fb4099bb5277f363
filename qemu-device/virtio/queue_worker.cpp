#include "virtio/queue_worker.hpp"

#include "common/log.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <variant>

namespace blkrig::virtio {

QueueWorker::QueueWorker(QueueSetup setup, std::shared_ptr<const GuestMemory> mem, Device& dev)
    : s_(setup), mem_(std::move(mem)), dev_(dev), ring_(s_.addrs, s_.num, s_.last_avail, s_.event_idx) {
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) throw std::runtime_error(fmt::format("eventfd: {}", std::strerror(errno)));
    thread_ = std::thread([this] { run(); });
}

QueueWorker::~QueueWorker() {
    stop();
    ::close(stop_fd_);
}

uint16_t QueueWorker::stop() {
    if (!stopped_) {
        stopped_ = true;
        const uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
        if (thread_.joinable()) thread_.join();
    }
    return ring_.last_avail();
}

void QueueWorker::notify() {
    if (s_.call_fd >= 0 && ring_.needs_notify()) {
        const uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(s_.call_fd, &one, sizeof one);
    }
}

bool QueueWorker::drain() {
    for (;;) {
        while (auto head = ring_.pop()) {
            Completion c;
            c.record.t_submit_ns = monotonic_ns();
            auto walked = walk_chain(ring_.desc(), ring_.num(), *head, *mem_, s_.indirect);
            if (auto* err = std::get_if<ChainError>(&walked)) {
                dev_.queue_broken(s_.index, *head, err->message());
                return false;
            }
            // Sequence numbers go to requests only, so a broken chain leaves no gap.
            c.record.seq = dev_.next_seq();
            c.record.queue = s_.index;
            c.record.head = *head;
            dev_.process(std::get<DescriptorChain>(walked), c);
            ring_.push_used(*head, c.used_len);
            c.record.t_complete_ns = monotonic_ns();
            dev_.completed(c);
            notify();
        }
        if (!ring_.error().empty()) {
            dev_.queue_broken(s_.index, 0, ring_.error());
            return false;
        }
        if (!ring_.arm_and_recheck()) return true;
    }
}

void QueueWorker::run() {
    // Buffers may already be waiting (a ring restarted after SET_VRING_BASE).
    if (!drain()) {
        broken_ = true;
    }
    pollfd fds[2] = {{s_.kick_fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    while (!broken_) {
        const int r = ::poll(fds, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            log(LogLevel::error, "queue {}: poll failed: {}", s_.index, std::strerror(errno));
            break;
        }
        if (fds[1].revents) break;
        if (fds[0].revents & (POLLERR | POLLNVAL)) {
            log(LogLevel::error, "queue {}: kick fd is no longer valid", s_.index);
            break;
        }
        if (fds[0].revents & POLLIN) {
            uint64_t v;
            [[maybe_unused]] auto n = ::read(s_.kick_fd, &v, sizeof v);
            if (!drain()) broken_ = true;
        }
    }
    if (broken_ && s_.err_fd >= 0) {
        // The front end reports this as a vring error for the queue.
        const uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(s_.err_fd, &one, sizeof one);
    }
}

}  // namespace blkrig::virtio
