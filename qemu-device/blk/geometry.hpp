// What the device is, as the command line made it: size, the marker
// region, block size, queues and the features offered (virtio 1.x 5.2.4).
#pragma once

#include <cstdint>
#include <string>

namespace blkrig::blk {

// A feature bit (VIRTIO_F_*, VIRTIO_BLK_F_*) as a mask.
constexpr uint64_t feature_bit(int n) { return 1ull << n; }

struct Geometry {
    uint64_t capacity_sectors = 0;  // what the driver sees, marker region included
    // The last marker_sectors sectors are the marker region: not backed by
    // the store, reads return a fixed pattern, and a one-block read there is
    // traced as a marker (a step boundary the guest puts in the trace).
    uint32_t marker_sectors = 0;
    uint32_t logical_block_size = 512;
    uint32_t seg_max = 126;
    uint32_t size_max = 0;          // 0: not advertised
    uint16_t num_queues = 1;
    uint16_t queue_size = 256;      // largest ring the device accepts
    bool write_cache = true;        // VIRTIO_BLK_F_FLUSH + CONFIG_WCE
    bool read_only = false;
    bool discard = true;
    bool write_zeroes = true;
    uint32_t max_discard_sectors = 1u << 22;
    uint32_t max_discard_seg = 1;
    uint32_t max_write_zeroes_sectors = 1u << 22;
    uint32_t max_write_zeroes_seg = 1;
    std::string serial = "blkrig";
};

}  // namespace blkrig::blk
