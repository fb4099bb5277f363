// virtio::SplitRing over rings placed in fake guest memory: heads come off
// the available ring in order, used elements and the used index are
// published, and interrupt suppression follows the driver's fields.
#include "fake_guest.hpp"

#include "virtio/split_ring.hpp"

#include <gtest/gtest.h>

namespace blkrig::virtio {
namespace {

using test::FakeGuest;

constexpr uint16_t kNum = 8;
// From the virtio spec (2.7.6, 2.7.8); <linux/virtio_ring.h> does not compile as C++.
constexpr uint16_t kAvailFNoInterrupt = 1;
struct UsedElem {
    uint32_t id;
    uint32_t len;
};

class SplitRingTest : public ::testing::Test {
protected:
    SplitRingTest()
        : desc_(g_.alloc(desc_table_bytes(kNum))),
          avail_(g_.alloc(avail_ring_bytes(kNum), 2)),
          used_(g_.alloc(used_ring_bytes(kNum), 4)) {}

    SplitRing ring(uint16_t last_avail = 0, bool event_idx = false) {
        RingAddrs a;
        a.desc = reinterpret_cast<RawDesc*>(g_.host(desc_, desc_table_bytes(kNum)));
        a.avail = g_.host(avail_, avail_ring_bytes(kNum));
        a.used = g_.host(used_, used_ring_bytes(kNum));
        return SplitRing(a, kNum, last_avail, event_idx);
    }

    // Driver side: offer head at the slot for avail index `at`, then publish idx.
    void offer(uint16_t at, uint16_t head) { g_.put<uint16_t>(avail_ + 4 + 2u * (at % kNum), head); }
    void set_avail_idx(uint16_t idx) { g_.put<uint16_t>(avail_ + 2, idx); }
    void set_avail_flags(uint16_t flags) { g_.put<uint16_t>(avail_, flags); }
    void set_used_event(uint16_t v) { g_.put<uint16_t>(avail_ + 4 + 2u * kNum, v); }
    uint16_t used_idx() const { return g_.get<uint16_t>(used_ + 2); }
    uint16_t avail_event() const { return g_.get<uint16_t>(used_ + 4 + 8u * kNum); }
    UsedElem used_elem(uint16_t slot) const { return g_.get<UsedElem>(used_ + 4 + 8u * slot); }

    FakeGuest g_;
    uint64_t desc_, avail_, used_;
};

TEST_F(SplitRingTest, PopReturnsHeadsInAvailOrder) {
    offer(0, 3);
    offer(1, 7);
    offer(2, 0);
    set_avail_idx(3);
    auto r = ring();
    EXPECT_EQ(r.pop(), std::optional<uint16_t>(3));
    EXPECT_EQ(r.pop(), std::optional<uint16_t>(7));
    EXPECT_EQ(r.pop(), std::optional<uint16_t>(0));
    EXPECT_EQ(r.pop(), std::nullopt);
    EXPECT_EQ(r.last_avail(), 3);
    EXPECT_TRUE(r.error().empty());
}

TEST_F(SplitRingTest, EmptyRingPopsNothing) {
    auto r = ring();
    EXPECT_EQ(r.pop(), std::nullopt);
    EXPECT_EQ(r.last_avail(), 0);
    EXPECT_TRUE(r.error().empty());
}

TEST_F(SplitRingTest, PopSeesHeadsPublishedLater) {
    auto r = ring();
    EXPECT_EQ(r.pop(), std::nullopt);
    offer(0, 5);
    set_avail_idx(1);
    EXPECT_EQ(r.pop(), std::optional<uint16_t>(5));
}

TEST_F(SplitRingTest, IndicesWrapAt16Bits) {
    // Resumed at last_avail 65534 (SET_VRING_BASE): slots 6 and 7, then avail idx wraps to 0.
    offer(65534, 2);
    offer(65535, 4);
    set_avail_idx(0);
    auto r = ring(65534);
    EXPECT_EQ(r.pop(), std::optional<uint16_t>(2));
    EXPECT_EQ(r.pop(), std::optional<uint16_t>(4));
    EXPECT_EQ(r.pop(), std::nullopt);
    EXPECT_EQ(r.last_avail(), 0);
    EXPECT_TRUE(r.error().empty());
}

TEST_F(SplitRingTest, FullRingIsAccepted) {
    for (uint16_t i = 0; i < kNum; ++i) offer(i, i);
    set_avail_idx(kNum);
    auto r = ring();
    for (uint16_t i = 0; i < kNum; ++i) EXPECT_EQ(r.pop(), std::optional<uint16_t>(i));
    EXPECT_TRUE(r.error().empty());
}

TEST_F(SplitRingTest, AvailIndexJumpBeyondQueueSizeIsAnError) {
    set_avail_idx(kNum + 1);
    auto r = ring();
    EXPECT_EQ(r.pop(), std::nullopt);
    EXPECT_FALSE(r.error().empty());
    EXPECT_EQ(r.last_avail(), 0) << "nothing may be consumed from a ring that lied";
}

TEST_F(SplitRingTest, AvailIndexGoingBackwardsIsAnError) {
    // idx 2 seen from last_avail 5 is 65533 pending.
    set_avail_idx(2);
    auto r = ring(5);
    EXPECT_EQ(r.pop(), std::nullopt);
    EXPECT_FALSE(r.error().empty());
}

TEST_F(SplitRingTest, PushUsedWritesElementThenIndex) {
    auto r = ring();
    r.push_used(3, 513);
    EXPECT_EQ(used_idx(), 1);
    EXPECT_EQ(used_elem(0).id, 3u);
    EXPECT_EQ(used_elem(0).len, 513u);
    r.push_used(6, 1);
    EXPECT_EQ(used_idx(), 2);
    EXPECT_EQ(used_elem(1).id, 6u);
    EXPECT_EQ(used_elem(1).len, 1u);
}

TEST_F(SplitRingTest, PushUsedContinuesFromGuestUsedIndexAndWraps) {
    g_.put<uint16_t>(used_ + 2, 65535);  // ring restarted where a previous session left it
    auto r = ring();
    r.push_used(1, 10);
    EXPECT_EQ(used_idx(), 0);
    EXPECT_EQ(used_elem(65535 % kNum).id, 1u);
    r.push_used(2, 20);
    EXPECT_EQ(used_idx(), 1);
    EXPECT_EQ(used_elem(0).id, 2u);
    EXPECT_EQ(used_elem(0).len, 20u);
}

TEST_F(SplitRingTest, NotifyWithoutEventIdxHonoursNoInterruptFlag) {
    auto r = ring();
    EXPECT_FALSE(r.needs_notify()) << "nothing was pushed";
    r.push_used(0, 1);
    EXPECT_TRUE(r.needs_notify());
    EXPECT_FALSE(r.needs_notify()) << "already signalled";

    set_avail_flags(kAvailFNoInterrupt);
    r.push_used(1, 1);
    EXPECT_FALSE(r.needs_notify());

    set_avail_flags(0);
    r.push_used(2, 1);
    EXPECT_TRUE(r.needs_notify());
}

TEST_F(SplitRingTest, NotifyWithEventIdxFollowsUsedEvent) {
    auto r = ring(0, /*event_idx=*/true);
    // The NO_INTERRUPT flag is ignored once EVENT_IDX is negotiated.
    set_avail_flags(kAvailFNoInterrupt);
    r.push_used(0, 1);
    EXPECT_TRUE(r.needs_notify()) << "the first check after start always signals";

    // Driver: interrupt me once used entry 2 is written (used idx goes past 2).
    set_used_event(2);
    r.push_used(1, 1);  // used idx 2
    EXPECT_FALSE(r.needs_notify());
    r.push_used(2, 1);  // used idx 3: crosses used_event
    EXPECT_TRUE(r.needs_notify());
    r.push_used(3, 1);  // used idx 4: already past, no new request for an interrupt
    EXPECT_FALSE(r.needs_notify());

    // Several pushes at once: signal if used_event lies anywhere in (old, new].
    set_used_event(5);
    r.push_used(4, 1);
    r.push_used(5, 1);
    r.push_used(6, 1);  // used idx 4 -> 7
    EXPECT_TRUE(r.needs_notify());
}

TEST_F(SplitRingTest, ArmAndRecheckPublishesAvailEventWithEventIdx) {
    offer(0, 1);
    set_avail_idx(1);
    auto r = ring(0, /*event_idx=*/true);
    ASSERT_EQ(r.pop(), std::optional<uint16_t>(1));
    EXPECT_FALSE(r.arm_and_recheck());
    EXPECT_EQ(avail_event(), 1) << "kick wanted at the next buffer";

    offer(1, 2);
    set_avail_idx(2);
    EXPECT_TRUE(r.arm_and_recheck()) << "a buffer arrived before sleeping";
}

TEST_F(SplitRingTest, ArmAndRecheckLeavesAvailEventAloneWithoutEventIdx) {
    g_.put<uint16_t>(used_ + 4 + 8u * kNum, 0xabcd);
    auto r = ring();
    EXPECT_FALSE(r.arm_and_recheck());
    EXPECT_EQ(avail_event(), 0xabcd);
}

}  // namespace
}  // namespace blkrig::virtio
