// The data the agent writes, reproducible on the host byte for byte.
//
// The guest writes it (write and mmap_write steps) and the host computes the
// same bytes to check what reached the disk, so this header is shared as is:
// header-only, standard library only.
//
// Pattern "random" with seed s is the xorshift64* stream (Vigna, "An
// experimental exploration of Marsaglia's xorshift generators, scrambled"):
//
//   state = s, or 0x9E3779B97F4A7C15 when s == 0 (0 is a fixed point)
//   for each 64-bit word:
//       state ^= state >> 12
//       state ^= state << 25
//       state ^= state >> 27
//       word = state * 0x2545F4914F6CDD1D          (mod 2^64)
//   bytes = the words, each little-endian, one after the other
//
// Byte k of what a step writes is byte k of that stream (k counts from the
// step's first byte, whatever the file offset). For seed 1 the stream starts
// 1d dd 6c 89 4b ce e4 47 1d 65 79 e0 a8 a6 cf ab.
//
// Pattern "zero" is all zero bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace blkrig::pattern {

enum class Kind { random, zero };

inline constexpr uint64_t kZeroSeedState = 0x9E3779B97F4A7C15ULL;
inline constexpr uint64_t kMultiplier = 0x2545F4914F6CDD1DULL;

class Xorshift64Star {
public:
    explicit constexpr Xorshift64Star(uint64_t seed) : state_(seed ? seed : kZeroSeedState) {}
    constexpr uint64_t next() {
        state_ ^= state_ >> 12;
        state_ ^= state_ << 25;
        state_ ^= state_ >> 27;
        return state_ * kMultiplier;
    }

private:
    uint64_t state_;
};

// The byte stream of one pattern, handed out in pieces of any size.
class Stream {
public:
    Stream(Kind kind, uint64_t seed) : kind_(kind), rng_(seed) {}

    void fill(void* dst, size_t n) {
        auto* out = static_cast<uint8_t*>(dst);
        if (kind_ == Kind::zero) {
            for (size_t i = 0; i < n; ++i) out[i] = 0;
            position_ += n;
            return;
        }
        for (size_t i = 0; i < n; ++i) {
            if (used_ == 8) {
                word_ = rng_.next();
                used_ = 0;
            }
            out[i] = static_cast<uint8_t>(word_ >> (8 * used_));
            ++used_;
        }
        position_ += n;
    }

    // Bytes handed out so far.
    uint64_t position() const { return position_; }

private:
    Kind kind_;
    Xorshift64Star rng_;
    uint64_t word_ = 0;
    unsigned used_ = 8;  // bytes of word_ already handed out
    uint64_t position_ = 0;
};

}  // namespace blkrig::pattern
