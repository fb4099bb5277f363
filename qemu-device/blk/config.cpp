// The device's feature bits and config space (virtio 1.x 5.2.3, 5.2.4),
// from the command-line geometry.
#include "blk/device.hpp"

#include "common/log.hpp"
#include "common/sectors.hpp"

#include <cstring>

namespace blkrig::blk {

uint64_t BlkDevice::features() const {
    uint64_t f = feature_bit(virtio::kFVersion1) | feature_bit(virtio::kFIndirectDesc) | feature_bit(virtio::kFEventIdx) | feature_bit(VIRTIO_BLK_F_SEG_MAX) |
                 feature_bit(VIRTIO_BLK_F_BLK_SIZE) | feature_bit(VIRTIO_BLK_F_MQ) | feature_bit(VIRTIO_BLK_F_TOPOLOGY);
    if (geo_.size_max) f |= feature_bit(VIRTIO_BLK_F_SIZE_MAX);
    if (geo_.write_cache) f |= feature_bit(VIRTIO_BLK_F_FLUSH) | feature_bit(VIRTIO_BLK_F_CONFIG_WCE);
    if (geo_.read_only) f |= feature_bit(VIRTIO_BLK_F_RO);
    if (geo_.discard && !geo_.read_only) f |= feature_bit(VIRTIO_BLK_F_DISCARD);
    if (geo_.write_zeroes && !geo_.read_only) f |= feature_bit(VIRTIO_BLK_F_WRITE_ZEROES);
    return f;
}

void BlkDevice::set_features(uint64_t acked) {
    acked_ = acked;
    // A driver that did not negotiate FLUSH cannot flush: the device must
    // then behave as write-through (5.2.6.2).
    writeback_ = geo_.write_cache && (acked & feature_bit(VIRTIO_BLK_F_FLUSH));
}

std::vector<uint8_t> BlkDevice::read_config() const {
    virtio_blk_config c{};
    c.capacity = geo_.capacity_sectors;
    c.size_max = geo_.size_max;
    c.seg_max = geo_.seg_max;
    c.blk_size = geo_.logical_block_size;
    c.physical_block_exp = 0;
    c.min_io_size = 1;
    c.opt_io_size = 0;
    c.wce = writeback_.load() ? 1 : 0;
    c.num_queues = geo_.num_queues;
    const uint32_t sectors_per_block = geo_.logical_block_size / kSectorSize;
    c.max_discard_sectors = geo_.max_discard_sectors;
    c.max_discard_seg = geo_.max_discard_seg;
    c.discard_sector_alignment = sectors_per_block;
    c.max_write_zeroes_sectors = geo_.max_write_zeroes_sectors;
    c.max_write_zeroes_seg = geo_.max_write_zeroes_seg;
    c.write_zeroes_may_unmap = 1;
    std::vector<uint8_t> out(sizeof c);
    std::memcpy(out.data(), &c, sizeof c);
    return out;
}

bool BlkDevice::write_config(uint32_t offset, std::span<const uint8_t> data) {
    // Only `writeback` is writable (5.2.4), and only with CONFIG_WCE.
    if (offset == offsetof(virtio_blk_config, wce) && data.size() == 1 && geo_.write_cache) {
        writeback_ = data[0] != 0;
        log(LogLevel::info, "driver set write cache to {}", data[0] ? "writeback" : "writethrough");
        return true;
    }
    return false;
}

}  // namespace blkrig::blk
