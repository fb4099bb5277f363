// One front-end connection: the vhost-user state machine. It owns the
// memory mappings, the per-queue fds and the queue threads for as long as
// the connection lasts; when it ends, everything it set up is undone, so
// the next connection starts from a clean session.
#pragma once

#include "common/fd.hpp"
#include "vhost_user/message.hpp"
#include "virtio/device.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/queue_worker.hpp"

#include <memory>
#include <vector>

namespace blkrig::vhost_user {

uint64_t offered_protocol_features();

class Session {
public:
    // queues: how its queues run (a thread each, or one shared loop; polling).
    Session(virtio::Device& dev, UniqueFd conn, virtio::QueueOptions queues = {});
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Serves messages until the front end disconnects, sends something we
    // must refuse (the connection is then closed), or stop_fd is readable.
    // Returns true if it ended because of stop_fd.
    bool serve(int stop_fd);
    // After serve: it ended on an error (a message we refused, a failed
    // poll), not on a close or stop_fd; and how many messages it handled.
    bool failed() const { return failed_; }
    uint64_t messages() const { return messages_; }

    // Handles one message; replies on the socket. Exposed for tests.
    void handle(Message& m);

private:
    struct Vring {
        uint16_t num = 0;
        uint16_t base = 0;
        VringAddr addr{};
        bool addr_set = false;
        bool enabled = false;
        UniqueFd kick, call, err;
        std::unique_ptr<virtio::QueueWorker> worker;
    };

    bool dispatch(Message& m);  // false: the request failed (reported with REPLY_ACK)
    void reply(uint32_t request, std::span<const uint8_t> payload);
    Vring& vring(uint32_t index, const Message& m);
    void stop_ring(Vring& v);
    void maybe_start(uint32_t index);
    void reset();
    bool protocol_negotiated() const;
    bool get_inflight_fd(const Message& m);
    bool set_inflight_fd(Message& m);

    // The inflight region the front end gave us (SET_INFLIGHT_FD), mapped.
    struct InflightRegion {
        uint8_t* addr = nullptr;
        size_t len = 0;
        uint16_t num_queues = 0;
        uint16_t queue_size = 0;
        ~InflightRegion();
    };

    virtio::Device& dev_;
    UniqueFd conn_;
    virtio::QueueOptions queues_;
    std::vector<Vring> vrings_;
    std::shared_ptr<const virtio::GuestMemory> mem_;
    std::shared_ptr<InflightRegion> inflight_;
    uint64_t acked_features_ = 0;
    uint64_t acked_protocol_ = 0;
    bool features_set_ = false;
    bool failed_ = false;
    uint64_t messages_ = 0;
};

}  // namespace blkrig::vhost_user
