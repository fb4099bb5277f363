// A vhost-user front end of our own: it plays QEMU's part (guest memory in a
// memfd, split rings, kicks and calls) so the device can be driven without a
// guest, for guestless tests and for benchmarks against other back ends such
// as qemu-storage-daemon. One thread drives it; it is not thread-safe.
#pragma once

#include "common/fd.hpp"
#include "vhost_user/message.hpp"

#include <linux/virtio_blk.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace blkrig::frontend {

struct FrontendError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Options {
    std::string socket_path;
    uint16_t queues = 1;
    uint16_t queue_size = 128;
    size_t memory_bytes = 64u << 20;
    bool event_idx = false;
    bool indirect = true;  // acknowledge VIRTIO_RING_F_INDIRECT_DESC if offered
};

struct Completed {
    uint16_t queue;
    uint32_t tag;      // what submit() returned
    uint8_t status;    // VIRTIO_BLK_S_*
    uint32_t used_len;
};

class Frontend {
public:
    // Connects and negotiates; the rings are running when this returns.
    explicit Frontend(const Options& o);
    ~Frontend();  // stops the rings (GET_VRING_BASE) and disconnects
    Frontend(const Frontend&) = delete;
    Frontend& operator=(const Frontend&) = delete;

    uint64_t capacity_sectors() const { return config_.capacity; }
    const virtio_blk_config& config() const { return config_; }
    uint64_t features() const { return acked_; }

    // A buffer in guest memory (valid for the front end's life).
    struct Buf {
        uint64_t gpa;
        uint8_t* host;
        uint32_t len;
    };
    Buf alloc(uint32_t len, uint32_t align = 4096);

    // Queues a request: header, the data buffers (device-writable for
    // reads), status. Returns a tag, or nullopt if the ring is full.
    std::optional<uint32_t> submit(uint16_t queue, uint32_t type, uint64_t sector, const std::vector<Buf>& data);

    // Waits until at least one request completes (or the timeout passes) and
    // returns what completed.
    std::vector<Completed> wait(std::chrono::milliseconds timeout);

    // Synchronous helpers.
    uint8_t read(uint64_t sector, Buf buf, uint16_t queue = 0);
    uint8_t write(uint64_t sector, Buf buf, uint16_t queue = 0);
    uint8_t flush(uint16_t queue = 0);

    // Stops queue q (GET_VRING_BASE) and returns the avail index the back end reports.
    uint16_t stop_queue(uint16_t q);
    uint16_t in_flight(uint16_t q) const;

    // Raw mode, for hostile-driver tests: the caller writes descriptors and
    // avail entries as it likes, well-formed or not. Descriptor slots taken
    // here come off the same free list submit() uses, so good requests can
    // follow on the same queue.
    struct Desc {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;  // VRING_DESC_F_*
        uint16_t next;
    };
    // n free slots of queue q's descriptor table; throws if there are fewer.
    std::vector<uint16_t> take_slots(uint16_t q, size_t n);
    void write_desc(uint16_t q, uint16_t slot, const Desc& d);
    // An indirect table in guest memory holding these descriptors.
    Buf indirect_table(const std::vector<Desc>& descs);
    // Puts head in the next avail entry and publishes the new avail index.
    // slots and status say what wait() reports and frees when the head comes
    // back; a head the back end should never return may pass none.
    void publish(uint16_t q, uint16_t head, std::vector<uint16_t> slots = {}, std::optional<Buf> status = std::nullopt);
    // Stores avail->idx as given, whatever entries it covers.
    void set_avail_idx(uint16_t q, uint16_t idx);
    void kick(uint16_t q);
    // True once the back end signalled queue q's error eventfd (SET_VRING_ERR).
    bool wait_error(uint16_t q, std::chrono::milliseconds timeout);
    // The driver's answer to a queue that needs a reset: stop it
    // (GET_VRING_BASE, returned), clear both rings and start it again from
    // index 0. Whatever was in flight is forgotten.
    uint16_t reset_queue(uint16_t q);

private:
    struct Queue {
        uint16_t num;
        uint64_t desc_gpa, avail_gpa, used_gpa;
        uint8_t *desc, *avail, *used;
        uint16_t avail_idx = 0;
        uint16_t last_used = 0;
        std::vector<uint16_t> free_desc;            // descriptor free list
        std::vector<std::vector<uint16_t>> chains;  // by head: the descriptors it holds
        std::vector<Buf> status_buf;                // by head
        std::vector<Buf> header_buf;                // by head
        std::vector<std::optional<Buf>> raw_status; // by head: where a raw request put its status byte
        UniqueFd kick, call, err;
        bool running = false;
    };

    uint64_t request(uint32_t req, const std::vector<uint8_t>& payload, bool want_reply, const std::vector<int>& fds = {});
    void send(uint32_t req, const std::vector<uint8_t>& payload, uint32_t flags, const std::vector<int>& fds);
    std::vector<uint8_t> recv_reply(uint32_t req);
    uint8_t sync(uint16_t q, uint32_t type, uint64_t sector, const std::vector<Buf>& data);
    void start_queue(uint16_t q);

    Options opt_;
    UniqueFd sock_, mem_fd_;
    uint8_t* mem_ = nullptr;
    size_t next_ = 0;
    uint64_t acked_ = 0;
    uint64_t protocol_ = 0;
    virtio_blk_config config_{};
    std::vector<Queue> queues_;
};

}  // namespace blkrig::frontend
