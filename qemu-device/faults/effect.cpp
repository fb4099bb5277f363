#include "faults/effect.hpp"

#include "common/sectors.hpp"

#include <linux/virtio_blk.h>

#include <algorithm>

namespace blkrig::faults {

Effect effect_of(const Action& a, uint32_t type, uint64_t data_bytes) {
    Effect e;
    switch (a.kind) {
    case ActionKind::ioerr:
        e.run = Effect::Run::none;
        e.status = Effect::Status::ioerr;
        break;
    case ActionKind::unsupp:
        e.run = Effect::Run::none;
        e.status = Effect::Status::unsupp;
        break;
    // Done now, on the used ring later: the queue goes on meanwhile, so
    // later requests can overtake these.
    case ActionKind::delay:
        e.defer = Effect::Defer::delay;
        e.delay_ns = a.delay_ns;
        break;
    case ActionKind::hold: e.defer = Effect::Defer::hold; break;
    case ActionKind::reorder:
        e.defer = Effect::Defer::reorder;
        e.reorder_after = a.count;
        break;
    case ActionKind::torn:
        // Only a write can tear; anything else a torn rule matches runs as asked.
        if (type != VIRTIO_BLK_T_OUT) break;
        e.run = Effect::Run::prefix;
        e.keep_bytes = std::min<uint64_t>(sectors::to_bytes(a.count), data_bytes);
        // A tear that keeps the whole write is no tear.
        if (!a.torn_ok && e.keep_bytes < data_bytes) e.status = Effect::Status::ioerr;
        break;
    case ActionKind::corrupt:
        if (type == VIRTIO_BLK_T_IN) e.run = Effect::Run::corrupt_read;
        else if (type == VIRTIO_BLK_T_OUT && a.offset < data_bytes) e.run = Effect::Run::corrupt_write;
        e.offset = a.offset;
        e.mask = a.mask;
        break;
    case ActionKind::lie:
        // Nothing reaches the store, and the guest hears success: a dropped
        // write, or a flush that leaves the cache volatile.
        e.run = Effect::Run::none;
        break;
    case ActionKind::crash: e.run = Effect::Run::crash; break;
    }
    return e;
}

}  // namespace blkrig::faults
