#include "virtio/split_ring.hpp"

#include <fmt/format.h>

#include <atomic>

namespace blkrig::virtio {

namespace {

// x86-64 and aarch64 hosts are little endian, as virtio 1.x rings are.
uint16_t ld16(const uint8_t* p, std::memory_order mo = std::memory_order_relaxed) {
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(const_cast<uint8_t*>(p))).load(mo);
}
void st16(uint8_t* p, uint16_t v, std::memory_order mo = std::memory_order_relaxed) {
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(p)).store(v, mo);
}
void st32(uint8_t* p, uint32_t v) {
    std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(p)).store(v, std::memory_order_relaxed);
}

constexpr uint16_t kAvailFNoInterrupt = 1;

}  // namespace

SplitRing::SplitRing(RingAddrs addrs, uint16_t num, uint16_t last_avail, bool event_idx)
    : addrs_(addrs), num_(num), last_avail_(last_avail), event_idx_(event_idx) {
    // The used index continues where the ring was left (SET_VRING_BASE after
    // a stop); the guest's view of used->idx is authoritative.
    used_idx_ = ld16(addrs_.used + 2, std::memory_order_acquire);
    signalled_used_ = used_idx_;
}

uint16_t SplitRing::load_avail_idx() const { return ld16(addrs_.avail + 2, std::memory_order_acquire); }

std::optional<uint16_t> SplitRing::pop() {
    const uint16_t avail_idx = load_avail_idx();
    const uint16_t pending = static_cast<uint16_t>(avail_idx - last_avail_);
    if (pending == 0) return std::nullopt;
    if (pending > num_) {
        error_ = fmt::format("avail index moved from {} to {}, more than the queue size {}", last_avail_, avail_idx, num_);
        return std::nullopt;
    }
    const uint16_t head = ld16(addrs_.avail + 4 + 2u * (last_avail_ % num_));
    ++last_avail_;
    return head;
}

void SplitRing::push_used(uint16_t head, uint32_t len) {
    uint8_t* elem = addrs_.used + 4 + 8u * (used_idx_ % num_);
    st32(elem, head);
    st32(elem + 4, len);
    ++used_idx_;
    // The element must be visible before the index that publishes it.
    st16(addrs_.used + 2, used_idx_, std::memory_order_release);
}

bool SplitRing::needs_notify() {
    // The used index store must be ordered before reading the driver's
    // suppression fields, or an interrupt can be lost.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint16_t old = signalled_used_;
    const uint16_t now = used_idx_;
    const bool valid = signalled_used_valid_;
    signalled_used_ = now;
    signalled_used_valid_ = true;
    if (!event_idx_) return (ld16(addrs_.avail) & kAvailFNoInterrupt) == 0 && now != old;
    if (!valid) return true;
    const uint16_t used_event = ld16(addrs_.avail + 4 + 2u * num_);
    // vring_need_event(): did we cross used_event going from old to now?
    return static_cast<uint16_t>(now - used_event - 1) < static_cast<uint16_t>(now - old);
}

bool SplitRing::arm_and_recheck() {
    if (event_idx_) st16(addrs_.used + 4 + 8u * num_, last_avail_);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return load_avail_idx() != last_avail_;
}

}  // namespace blkrig::virtio
