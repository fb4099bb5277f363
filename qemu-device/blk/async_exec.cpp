#include "blk/async_exec.hpp"
#include "blk/device.hpp"

#include "blk/geometry.hpp"
#include "common/log.hpp"
#include "trace/format.hpp"

#include <linux/virtio_blk.h>

#include <cstring>

namespace blkrig::blk {

StoreExec::Started StoreExec::start(const Request& r, virtio::Completion& c) {
    const uint64_t seq = c.record.seq;
    if ((r.type == VIRTIO_BLK_T_IN || r.type == VIRTIO_BLK_T_OUT) &&
        q_->try_cached(r.type == VIRTIO_BLK_T_OUT, r.sector * kSectorSize, r.data) == r.data_bytes)
        return Started::finished;
    // A part moved is moved again with the rest: the same bytes, in the same place.
    bool queued = false;
    switch (r.type) {
    case VIRTIO_BLK_T_IN: queued = q_->read(r.sector * kSectorSize, r.data, seq); break;
    case VIRTIO_BLK_T_OUT: queued = q_->write(r.sector * kSectorSize, r.data, seq); break;
    case VIRTIO_BLK_T_FLUSH: queued = q_->flush(seq); break;
    default: return Started::no;
    }
    if (!queued) return Started::no;
    Pending& p = pending_[seq];
    p.status = r.status;
    p.data_bytes = r.data_bytes;
    p.returns_data = r.type == VIRTIO_BLK_T_IN;
    c.defer = virtio::Defer::io;
    return Started::queued;
}

void StoreExec::hold(virtio::Completion&& c) {
    const uint64_t seq = c.record.seq;
    pending_.at(seq).c = std::move(c);
}

void StoreExec::reap(std::vector<virtio::Completion>& done, bool wait) {
    q_->reap(
        [&](uint64_t seq, int result) {
            auto it = pending_.find(seq);
            if (it == pending_.end()) return;  // cannot happen: every tag was started here
            Pending& p = it->second;
            auto& rec = p.c.record;
            if (result != 0)
                log(LogLevel::debug, "queue {} seq {}: {} sector {} bytes {}: store error: {}", queue_, seq, trace::op_label(rec.type),
                    rec.sector, p.data_bytes, std::strerror(-result));
            const uint8_t st = result == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
            *p.status = st;
            rec.status = st;
            p.c.used_len = (p.returns_data && result == 0 ? p.data_bytes : 0) + 1;
            p.c.defer = virtio::Defer::none;
            done.push_back(std::move(p.c));
            pending_.erase(it);
        },
        wait);
}

// The device's side of it.
std::unique_ptr<virtio::AsyncExec> BlkDevice::async_exec(uint16_t queue, uint16_t depth) {
    if (!async_) return nullptr;
    std::string why = store_.sync_is_better();
    auto q = why.empty() ? store_.async_queue(depth, &why) : nullptr;
    if (!q) {
        if (!async_noted_.exchange(true))
            log(LogLevel::info, "{}: no asynchronous I/O ({}); requests run synchronously on the queue threads", store_.describe(), why);
        return nullptr;
    }
    return std::make_unique<StoreExec>(std::move(q), queue);
}

StoreExec::Started BlkDevice::start_async(const Request& r, virtio::Completion& c) {
    // The write log sees every change in order, and the marker region is
    // the device's own: both stay on the synchronous path.
    if (wlog_ || (c.record.flags & trace::kReqMarker)) return StoreExec::Started::no;
    switch (r.type) {
    case VIRTIO_BLK_T_IN:
        if (check_range(r.sector, r.data_bytes, data_sectors()) != Refusal::none) return StoreExec::Started::no;
        break;
    case VIRTIO_BLK_T_OUT:
        // Write-through wants a flush after each write: the synchronous path does it.
        if (geo_.read_only || !writeback_.load(std::memory_order_relaxed)) return StoreExec::Started::no;
        if (check_range(r.sector, r.data_bytes, data_sectors()) != Refusal::none) return StoreExec::Started::no;
        break;
    case VIRTIO_BLK_T_FLUSH:
        if (!(acked_.load(std::memory_order_relaxed) & feature_bit(VIRTIO_BLK_F_FLUSH))) return StoreExec::Started::no;
        break;
    default: return StoreExec::Started::no;
    }
    return static_cast<StoreExec*>(c.exec)->start(r, c);
}

}  // namespace blkrig::blk
