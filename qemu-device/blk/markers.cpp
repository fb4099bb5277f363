#include "blk/markers.hpp"

#include "common/sectors.hpp"

#include <linux/virtio_blk.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace blkrig::blk {

int64_t marker_index(const Geometry& g, const Request& r) {
    if (g.marker_sectors == 0 || r.type != VIRTIO_BLK_T_IN || r.data_bytes != g.logical_block_size) return -1;
    const uint64_t base = g.capacity_sectors - g.marker_sectors;
    if (r.sector < base || r.sector >= g.capacity_sectors) return -1;
    const uint64_t per_block = g.logical_block_size / sectors::kSize;
    if ((r.sector - base) % per_block) return -1;
    return static_cast<int64_t>((r.sector - base) / per_block);
}

uint32_t marker_at(const Geometry& g, uint64_t sector) {
    return static_cast<uint32_t>((sector - (g.capacity_sectors - g.marker_sectors)) / (g.logical_block_size / sectors::kSize));
}

void fill_marker(const std::vector<iovec>& data, uint64_t first_marker_sector, uint64_t skip, uint64_t end) {
    std::vector<char> flat(end - skip, 0);
    for (uint64_t off = 0; off < flat.size(); off += sectors::kSize)
        std::snprintf(flat.data() + off, sectors::kSize, "BLKRIG-MARKER %llu\n",
                      static_cast<unsigned long long>(first_marker_sector + sectors::of_offset(off)));
    uint64_t pos = 0;
    for (const auto& v : data) {
        const uint64_t lo = std::max(pos, skip), hi = std::min(pos + v.iov_len, end);
        if (lo < hi) std::memcpy(static_cast<uint8_t*>(v.iov_base) + (lo - pos), flat.data() + (lo - skip), hi - lo);
        pos += v.iov_len;
    }
}

}  // namespace blkrig::blk
