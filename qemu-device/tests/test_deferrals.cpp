// Deferred completions: a delayed one comes due on time, a reordered one
// after N later completions of its queue (or its time limit), a held one
// only when released; a stopping queue takes everything it still waits for.
#include "virtio/deferrals.hpp"

#include "common/log.hpp"

#include <gtest/gtest.h>

#include <poll.h>

#include <chrono>
#include <thread>

namespace blkrig::virtio {
namespace {

Completion make(uint64_t seq, Defer d, uint32_t rule = 0) {
    Completion c;
    c.record.seq = seq;
    c.defer = d;
    c.record.fault_rule = rule;
    return c;
}

bool readable(const Inbox& in, int ms) {
    pollfd p{in.fd(), POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
}

std::vector<uint64_t> seqs(std::vector<Completion> cs) {
    std::vector<uint64_t> out;
    for (const auto& c : cs) out.push_back(c.record.seq);
    return out;
}

TEST(Deferrals, DelayedCompletionComesDueAfterItsTime) {
    Deferrals d;
    Inbox in;
    auto c = make(1, Defer::until);
    const uint64_t t0 = monotonic_ns();
    c.defer_until_ns = t0 + 50'000'000;
    d.add(std::move(c), &in);
    EXPECT_EQ(in.waiting(), 1u);
    ASSERT_TRUE(readable(in, 5000));
    EXPECT_GE(monotonic_ns() - t0, 50'000'000u);
    EXPECT_EQ(seqs(in.take()), std::vector<uint64_t>{1});
    EXPECT_EQ(in.waiting(), 0u);
}

TEST(Deferrals, ReorderedCompletesAfterNLaterCompletionsOfItsQueueOnly) {
    Deferrals d;
    Inbox q0, q1;
    auto c = make(7, Defer::reorder);
    c.reorder_after = 2;
    d.add(std::move(c), &q0);
    d.completed_on(&q1);  // another queue's completion does not count
    d.completed_on(&q0);
    EXPECT_FALSE(readable(q0, 0));
    d.completed_on(&q0);
    ASSERT_TRUE(readable(q0, 0));
    EXPECT_EQ(seqs(q0.take()), std::vector<uint64_t>{7});
}

TEST(Deferrals, HeldOnlyWhenReleasedBySeqRuleOrAll) {
    Deferrals d;
    Inbox in;
    d.add(make(1, Defer::hold, 10), &in);
    d.add(make(2, Defer::hold, 11), &in);
    d.add(make(3, Defer::hold, 11), &in);
    EXPECT_FALSE(readable(in, 100)) << "a held request completed by itself";
    const auto held = d.held();
    ASSERT_EQ(held.size(), 3u);
    EXPECT_EQ(held[0].rule, 10u);
    EXPECT_EQ(d.release(uint64_t{2}, std::nullopt), std::vector<uint64_t>{2});
    EXPECT_EQ(seqs(in.take()), std::vector<uint64_t>{2});
    EXPECT_TRUE(d.release(uint64_t{2}, std::nullopt).empty()) << "released twice";
    EXPECT_EQ(d.release(std::nullopt, uint32_t{10}), std::vector<uint64_t>{1});
    EXPECT_EQ(d.release(std::nullopt, std::nullopt), std::vector<uint64_t>{3});
    EXPECT_EQ(seqs(in.take()), (std::vector<uint64_t>{1, 3}));
}

TEST(Deferrals, TakeAllEmptiesOnlyThatQueue) {
    Deferrals d;
    Inbox q0, q1;
    d.add(make(1, Defer::hold), &q0);
    d.add(make(2, Defer::hold), &q1);
    auto c = make(3, Defer::until);
    c.defer_until_ns = monotonic_ns() + 3'600'000'000'000;
    d.add(std::move(c), &q0);
    EXPECT_EQ(seqs(d.take_all(&q0)), (std::vector<uint64_t>{1, 3}));
    EXPECT_EQ(q0.waiting(), 0u);
    EXPECT_EQ(q1.waiting(), 1u);
}

}  // namespace
}  // namespace blkrig::virtio
