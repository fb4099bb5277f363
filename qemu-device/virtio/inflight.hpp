// In-flight descriptor tracking in the shared inflight region (vhost-user
// spec, "Inflight I/O tracking", split virtqueues). The front end keeps the
// region across a back-end crash and hands it to the next back end
// (SET_INFLIGHT_FD), which resubmits what was fetched but never put on the
// used ring. Pure bookkeeping over a block of memory: the session maps it,
// tests put a plain buffer behind it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace blkrig::virtio {

// The spec's layout. `padding` is ours: blkrig keeps the request's trace seq
// + 1 there (40 bits, 0: unknown), so a resubmitted request keeps its seq.
struct InflightDesc {
    uint8_t inflight;
    uint8_t padding[5];
    uint16_t next;
    uint64_t counter;
};
static_assert(sizeof(InflightDesc) == 16);

struct InflightHeader {
    uint64_t features;
    uint16_t version;  // 0: fresh (or the VM was reset); 1 once a back end used it
    uint16_t desc_num;
    uint16_t last_batch_head;
    uint16_t used_idx;
};
static_assert(sizeof(InflightHeader) == 16);

inline constexpr uint16_t kInflightVersion = 1;

// Bytes of one queue's part of the region, as libvhost-user and QEMU lay it
// out: header and descriptor states, rounded up to 64.
size_t inflight_queue_bytes(uint16_t queue_size);

// A request the previous back end fetched and never completed.
struct Resubmit {
    uint16_t head;
    uint64_t counter;
    bool has_seq;
    uint64_t seq;
};

struct InflightRecovery {
    bool fresh = true;       // nothing to resume: the region was new or reset
    uint16_t last_avail = 0; // where the available ring continues
    std::vector<Resubmit> resubmit;  // in fetch order (counter ascending)
    std::string note;        // what was found, for the log and the trace
};

// One queue's part of the region.
class InflightQueue {
public:
    // base: the queue's part (inflight_queue_bytes(ring_size) bytes). The
    // ring's size must not exceed the region's desc_num.
    InflightQueue(uint8_t* base, uint16_t ring_size);

    // At queue start, with the guest's used->idx: a fresh region is
    // initialised; otherwise the last batch is settled (completed if the used
    // index moved past it) and the in-flight descriptors are listed in the
    // order they were fetched.
    InflightRecovery recover(uint16_t used_idx);

    // A head taken off the available ring (or resubmitted: keeps its counter).
    void fetched(uint16_t head, uint64_t seq);
    // Around putting head on the used ring: before (last_batch_head), and
    // after with the new used index (cleared, used_idx recorded).
    void before_used(uint16_t head);
    void after_used(uint16_t head, uint16_t used_idx);

    bool in_flight(uint16_t head) const;
    // Highest seq recorded among in-flight descriptors, or -1.
    int64_t max_seq() const;
    uint16_t size() const { return num_; }

private:
    InflightHeader* hdr() const { return reinterpret_cast<InflightHeader*>(base_); }
    InflightDesc* desc(uint16_t i) const { return reinterpret_cast<InflightDesc*>(base_ + sizeof(InflightHeader)) + i; }

    uint8_t* base_;
    uint16_t num_;
    uint64_t counter_ = 0;
};

// The highest seq any queue of a region holds in flight (-1: none), for the
// device to number new requests past it. region: num_queues parts.
int64_t inflight_max_seq(uint8_t* region, uint16_t num_queues, uint16_t queue_size);

}  // namespace blkrig::virtio
