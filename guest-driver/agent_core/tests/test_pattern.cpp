// The pattern stream is the documented xorshift64*: fixed first bytes, the
// same bytes however the stream is cut into pieces.
#include "agent_core/pattern.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace blkrig::pattern {
namespace {

std::vector<uint8_t> bytes(Kind kind, uint64_t seed, size_t n) {
    std::vector<uint8_t> out(n);
    Stream(kind, seed).fill(out.data(), n);
    return out;
}

// Computed once, independently, from the algorithm in pattern.hpp.
TEST(Pattern, Seed1StartsWithTheDocumentedBytes) {
    const std::vector<uint8_t> want = {0x1d, 0xdd, 0x6c, 0x89, 0x4b, 0xce, 0xe4, 0x47, 0x1d, 0x65, 0x79,
                                       0xe0, 0xa8, 0xa6, 0xcf, 0xab, 0x57, 0x1f, 0x73, 0xeb, 0x8f, 0x0d,
                                       0xd1, 0xb9, 0x9d, 0x01, 0x1b, 0xbb, 0xa0, 0x18, 0xb4, 0x4d};
    EXPECT_EQ(bytes(Kind::random, 1, want.size()), want);
}

TEST(Pattern, Seed0UsesTheFixedState) {
    const std::vector<uint8_t> want = {0x7a, 0x48, 0x21, 0x9a, 0xe2, 0xb3, 0x83, 0x0d,
                                       0x67, 0x9d, 0xfe, 0xf1, 0x79, 0x4c, 0xc4, 0x54};
    EXPECT_EQ(bytes(Kind::random, 0, want.size()), want);
    EXPECT_EQ(bytes(Kind::random, 0, 64), bytes(Kind::random, kZeroSeedState, 64));
}

TEST(Pattern, SameSeedSameBytesOtherSeedOtherBytes) {
    EXPECT_EQ(bytes(Kind::random, 42, 4096), bytes(Kind::random, 42, 4096));
    EXPECT_NE(bytes(Kind::random, 42, 4096), bytes(Kind::random, 43, 4096));
}

TEST(Pattern, PiecesOfAnySizeGiveTheSameStream) {
    const auto whole = bytes(Kind::random, 9, 10000);
    Stream s(Kind::random, 9);
    std::vector<uint8_t> pieces(whole.size());
    size_t pos = 0;
    for (size_t step = 1; pos < pieces.size(); step = step * 3 % 17 + 1) {
        const size_t n = std::min(step, pieces.size() - pos);
        s.fill(pieces.data() + pos, n);
        pos += n;
    }
    EXPECT_EQ(pieces, whole);
    EXPECT_EQ(s.position(), whole.size());
}

TEST(Pattern, ZeroIsZero) {
    EXPECT_EQ(bytes(Kind::zero, 5, 100), std::vector<uint8_t>(100, 0));
}

TEST(Pattern, GeneratorIsConstexpr) {
    constexpr uint64_t first = [] {
        Xorshift64Star g(1);
        return g.next();
    }();
    static_assert(first == 0x47e4ce4b896cdd1dULL);
    EXPECT_EQ(first, 0x47e4ce4b896cdd1dULL);
}

}  // namespace
}  // namespace blkrig::pattern
