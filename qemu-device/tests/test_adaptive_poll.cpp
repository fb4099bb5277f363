#include "virtio/adaptive_poll.hpp"

#include <gtest/gtest.h>

namespace blkrig::virtio {
namespace {

TEST(AdaptivePoll, WithoutAMaximumItNeverPolls) {
    AdaptivePoll p(0);
    for (uint64_t w : {1u, 10u, 1000u}) p.waited(w);
    EXPECT_EQ(p.window(), 0u);
}

TEST(AdaptivePoll, ShortWaitsGrowTheWindowUpToTheMaximum) {
    AdaptivePoll p(64'000);
    EXPECT_EQ(p.window(), 0u);  // the first wait sleeps
    p.waited(30'000);
    EXPECT_EQ(p.window(), AdaptivePoll::kFirstNs);
    p.waited(30'000);
    EXPECT_EQ(p.window(), 8'000u);
    p.waited(30'000);
    p.waited(30'000);
    EXPECT_EQ(p.window(), 32'000u);
    p.waited(60'000);
    EXPECT_EQ(p.window(), 64'000u);
    p.waited(63'000);
    EXPECT_EQ(p.window(), 64'000u) << "never beyond the maximum";
}

TEST(AdaptivePoll, AWaitServedInsideTheWindowKeepsIt) {
    AdaptivePoll p(64'000);
    p.waited(10'000);
    p.waited(10'000);
    ASSERT_EQ(p.window(), 8'000u);
    p.waited(7'000);
    EXPECT_EQ(p.window(), 8'000u);
}

TEST(AdaptivePoll, AWaitLongerThanTheMaximumStopsPolling) {
    AdaptivePoll p(64'000);
    for (int i = 0; i < 10; ++i) p.waited(50'000);
    ASSERT_EQ(p.window(), 64'000u);
    p.waited(64'001);
    EXPECT_EQ(p.window(), 0u);
    p.waited(1'000);
    EXPECT_EQ(p.window(), AdaptivePoll::kFirstNs) << "and starts again from the first window";
}

}  // namespace
}  // namespace blkrig::virtio
