// The device side of a split virtqueue's rings (virtio 1.x 2.7): taking
// heads from the available ring, returning them on the used ring, and the
// notification rules with and without VIRTIO_RING_F_EVENT_IDX.
// The rings are shared with a running guest: every index is read once, with
// the ordering the spec asks for, and never trusted beyond range checks.
#pragma once

#include "virtio/chain.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace blkrig::virtio {

struct RingAddrs {
    RawDesc* desc = nullptr;
    uint8_t* avail = nullptr;  // le16 flags, le16 idx, le16 ring[num], le16 used_event
    uint8_t* used = nullptr;   // le16 flags, le16 idx, {le32 id, le32 len}[num], le16 avail_event
};

inline constexpr size_t avail_ring_bytes(uint16_t num) { return 4 + 2ull * num + 2; }
inline constexpr size_t used_ring_bytes(uint16_t num) { return 4 + 8ull * num + 2; }
inline constexpr size_t desc_table_bytes(uint16_t num) { return 16ull * num; }

// Which area the used ring overlaps, given the three areas' addresses (any
// one address space), nullptr when none. The device writes the used ring: laid
// over the avail index, every completion would publish a new request.
inline const char* used_ring_overlap(uint64_t desc, uint64_t avail, uint64_t used, uint16_t num) {
    const auto overlaps = [&](uint64_t a, size_t alen) {
        const size_t ulen = used_ring_bytes(num);
        if (used > UINT64_MAX - ulen || a > UINT64_MAX - alen) return false;  // unmappable: refused elsewhere
        return a < used + ulen && used < a + alen;
    };
    if (overlaps(avail, avail_ring_bytes(num))) return "avail ring";
    if (overlaps(desc, desc_table_bytes(num))) return "descriptor table";
    return nullptr;
}

class SplitRing {
public:
    SplitRing(RingAddrs addrs, uint16_t num, uint16_t last_avail, bool event_idx);

    // Next head the driver made available, nullopt when none. Sets error()
    // and returns nullopt if the driver moved avail->idx by more than the
    // queue size.
    std::optional<uint16_t> pop();

    void push_used(uint16_t head, uint32_t len);

    // Whether the driver wants an interrupt for what was pushed since the
    // last call (2.7.7.2 and 2.7.10).
    bool needs_notify();

    // With EVENT_IDX: ask for a kick at the next buffer, then re-check; true
    // if buffers arrived meanwhile (process them before sleeping).
    bool arm_and_recheck();

    uint16_t last_avail() const { return last_avail_; }
    // Where popping continues: the inflight region knows better than
    // SET_VRING_BASE after a back end died (heads fetched, never used).
    void set_last_avail(uint16_t v) { last_avail_ = v; }
    uint16_t used_idx() const { return used_idx_; }
    // Buffers the driver made available that pop() has not taken yet.
    uint16_t avail_pending() const { return static_cast<uint16_t>(load_avail_idx() - last_avail_); }
    uint16_t num() const { return num_; }
    const RawDesc* desc() const { return addrs_.desc; }
    const std::string& error() const { return error_; }

private:
    uint16_t load_avail_idx() const;

    RingAddrs addrs_;
    uint16_t num_;
    uint16_t last_avail_;
    uint16_t used_idx_;
    uint16_t signalled_used_;
    bool signalled_used_valid_ = false;
    bool event_idx_;
    std::string error_;
};

}  // namespace blkrig::virtio
