#include "virtio/inflight.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstring>

namespace blkrig::virtio {

namespace {

constexpr size_t kAlign = 64;

// The seq lives in the 5 padding bytes as seq + 1 (0: none recorded).
void put_seq(InflightDesc* d, uint64_t seq) {
    const uint64_t v = (seq + 1) & ((uint64_t{1} << 40) - 1);
    for (int i = 0; i < 5; ++i) d->padding[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get_seq_plus1(const InflightDesc* d) {
    uint64_t v = 0;
    for (int i = 0; i < 5; ++i) v |= uint64_t{d->padding[i]} << (8 * i);
    return v;
}

// A crash may stop the back end between any two stores: each store that the
// recovery relies on is ordered after the ones before it.
void barrier() { std::atomic_thread_fence(std::memory_order_seq_cst); }

}  // namespace

size_t inflight_queue_bytes(uint16_t queue_size) {
    const size_t raw = sizeof(InflightHeader) + sizeof(InflightDesc) * queue_size;
    return (raw + kAlign - 1) / kAlign * kAlign;
}

InflightQueue::InflightQueue(uint8_t* base, uint16_t ring_size) : base_(base), num_(ring_size) {}

InflightRecovery InflightQueue::recover(uint16_t used_idx) {
    InflightRecovery r;
    InflightHeader* h = hdr();
    if (h->version == 0) {
        // A new region, or the front end reset the device: nothing to resume.
        std::memset(base_ + sizeof(InflightHeader), 0, sizeof(InflightDesc) * num_);
        h->desc_num = num_;
        h->used_idx = used_idx;
        h->last_batch_head = 0;
        barrier();
        h->version = kInflightVersion;
        r.last_avail = used_idx;
        r.note = "inflight region initialised";
        return r;
    }
    r.fresh = false;
    // The last head put on the used ring may have been published (used->idx
    // moved) before the back end cleared its in-flight mark.
    if (h->used_idx != used_idx) {
        if (h->last_batch_head < num_) desc(h->last_batch_head)->inflight = 0;
        barrier();
        h->used_idx = used_idx;
    }
    uint64_t max_counter = 0;
    for (uint16_t i = 0; i < num_; ++i) {
        const InflightDesc* d = desc(i);
        if (d->inflight != 1) continue;
        const uint64_t s = get_seq_plus1(d);
        r.resubmit.push_back({i, d->counter, s != 0, s ? s - 1 : 0});
        max_counter = std::max(max_counter, d->counter);
    }
    std::sort(r.resubmit.begin(), r.resubmit.end(), [](const Resubmit& a, const Resubmit& b) { return a.counter < b.counter; });
    counter_ = r.resubmit.empty() ? 0 : max_counter + 1;
    // Every head fetched is either on the used ring or still in flight.
    r.last_avail = static_cast<uint16_t>(used_idx + r.resubmit.size());
    r.note = fmt::format("inflight region: {} request(s) in flight, used index {}, the available ring continues at {}", r.resubmit.size(),
                         used_idx, r.last_avail);
    return r;
}

void InflightQueue::fetched(uint16_t head, uint64_t seq) {
    if (head >= num_) return;
    InflightDesc* d = desc(head);
    if (d->inflight == 1) {
        // A resubmitted head keeps its place in the order; its seq is recorded
        // in case it had none (a region another back end used).
        put_seq(d, seq);
        return;
    }
    d->counter = counter_++;
    put_seq(d, seq);
    barrier();
    d->inflight = 1;
}

void InflightQueue::before_used(uint16_t head) { hdr()->last_batch_head = head; barrier(); }

void InflightQueue::after_used(uint16_t head, uint16_t used_idx) {
    barrier();
    if (head < num_) desc(head)->inflight = 0;
    barrier();
    hdr()->used_idx = used_idx;
}

bool InflightQueue::in_flight(uint16_t head) const { return head < num_ && desc(head)->inflight == 1; }

int64_t InflightQueue::max_seq() const {
    int64_t m = -1;
    for (uint16_t i = 0; i < num_; ++i)
        if (desc(i)->inflight == 1)
            if (const uint64_t s = get_seq_plus1(desc(i)); s) m = std::max<int64_t>(m, static_cast<int64_t>(s - 1));
    return m;
}

int64_t inflight_max_seq(uint8_t* region, uint16_t num_queues, uint16_t queue_size) {
    int64_t m = -1;
    for (uint16_t q = 0; q < num_queues; ++q) {
        uint8_t* base = region + inflight_queue_bytes(queue_size) * q;
        const auto* h = reinterpret_cast<const InflightHeader*>(base);
        if (h->version == 0) continue;
        m = std::max(m, InflightQueue(base, std::min(queue_size, h->desc_num)).max_seq());
    }
    return m;
}

}  // namespace blkrig::virtio
