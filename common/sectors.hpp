// Sectors and bytes: virtio-blk addresses the disk in 512-byte sectors
// whatever the logical block size. One rounding rule: a byte length covers
// the sectors it touches (rounded up), so an odd length is never shown or
// checked as shorter than it is.
#pragma once

#include <cstdint>

namespace blkrig::sectors {

inline constexpr uint64_t kSize = 512;

constexpr uint64_t to_bytes(uint64_t sectors) { return sectors * kSize; }
constexpr uint64_t covering(uint64_t bytes) { return bytes / kSize + (bytes % kSize != 0); }
// The sector holding byte OFFSET.
constexpr uint64_t of_offset(uint64_t offset) { return offset / kSize; }

}  // namespace blkrig::sectors
