// File contents the host can recompute byte for byte.
//
// "random" and "zero" are the guest agent's streams (agent/pattern.hpp),
// included rather than copied so host and guest cannot drift apart: byte i of
// the file is byte i of the stream. "pattern" is positional, so any sector
// can be checked without generating what comes before it:
//
//   byte i = ((i / 512) & 0xff) ^ (i & 0xff)
//
// (the sector number's low byte XOR the offset's low byte). No 512-byte
// sector of it is all zero, and sectors 256 apart differ.
#pragma once

#include "agent_core/pattern.hpp"
#include "disk_image.hpp"

#include <algorithm>
#include <cstdint>
#include <span>

namespace blkrig::image {

inline uint8_t pattern_byte(uint64_t i) {
    return static_cast<uint8_t>(((i / 512) & 0xff) ^ (i & 0xff));
}

// The content of one file, read in any order: reading backwards restarts the
// random stream, so sequential reads cost one pass.
class ContentReader {
public:
    ContentReader(Content content, uint64_t seed)
        : content_(content), seed_(seed), stream_(kind(content), seed) {}

    void read(uint64_t offset, std::span<uint8_t> out) {
        if (content_ == Content::pattern) {
            for (size_t k = 0; k < out.size(); ++k) out[k] = pattern_byte(offset + k);
            return;
        }
        if (offset < stream_.position()) stream_ = pattern::Stream(kind(content_), seed_);
        uint8_t skip[4096];
        while (stream_.position() < offset) {
            uint64_t n = std::min<uint64_t>(sizeof skip, offset - stream_.position());
            stream_.fill(skip, static_cast<size_t>(n));
        }
        stream_.fill(out.data(), out.size());
    }

private:
    static pattern::Kind kind(Content c) {
        return c == Content::zero ? pattern::Kind::zero : pattern::Kind::random;
    }

    Content content_;
    uint64_t seed_;
    pattern::Stream stream_;
};

}  // namespace blkrig::image
