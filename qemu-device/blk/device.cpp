#include "blk/device.hpp"

#include "blk/async_exec.hpp"
#include "blk/iov.hpp"
#include "blk/markers.hpp"
#include "common/log.hpp"

#include <unistd.h>

#include <bit>
#include <chrono>
#include <cstdio>
#include <thread>
#include <cstring>
#include <variant>

namespace blkrig::blk {

BlkDevice::BlkDevice(Geometry g, store::Store& store, trace::Writer* trace, faults::Engine* faults, store::WriteLog* wlog,
                     PowerCutPlan plan)
    : geo_(std::move(g)), store_(store), trace_(trace), faults_(faults), wlog_(wlog), plan_(std::move(plan)),
      start_ns_(monotonic_ns()), writeback_(geo_.write_cache) {}

Refusal BlkDevice::check_range(uint64_t sector, uint64_t bytes, uint64_t limit) const {
    if (bytes % kSectorSize) return Refusal::unaligned_length;
    const uint64_t n = bytes / kSectorSize;
    if (sector > limit || n > limit - sector) return Refusal::out_of_range;
    return Refusal::none;
}

Refusal BlkDevice::read(const Request& r) {
    if (auto e = check_range(r.sector, r.data_bytes, geo_.capacity_sectors); e != Refusal::none) return e;
    const uint64_t end = r.sector + r.data_bytes / kSectorSize;
    const uint64_t base = data_sectors();
    if (end <= base) return store_.read(r.sector * kSectorSize, r.data) == 0 ? Refusal::none : Refusal::store_error;
    // Reaches into the marker region: the store part first, then the pattern.
    const uint64_t store_bytes = r.sector < base ? (base - r.sector) * kSectorSize : 0;
    if (store_bytes && store_.read(r.sector * kSectorSize, iov_prefix(r.data, store_bytes)) != 0) return Refusal::store_error;
    fill_marker(r.data, std::max(r.sector, base) - base, store_bytes, r.data_bytes);
    return Refusal::none;
}

Refusal BlkDevice::write(const Request& r, uint64_t seq, const std::vector<iovec>& data, uint64_t bytes) {
    if (geo_.read_only) return Refusal::read_only;
    // The marker region is reserved: writes there are refused.
    if (auto e = check_range(r.sector, r.data_bytes, data_sectors()); e != Refusal::none) return e;
    const uint64_t off = r.sector * kSectorSize;
    auto store_write = [&] { return store_.write(off, data); };
    if ((wlog_ ? wlog_->change(seq, r.type, off, bytes, store_write, data) : store_write()) != 0) return Refusal::store_error;
    // Write-through (no FLUSH negotiated, or the driver turned the cache
    // off): the write is durable when it completes.
    if (!writeback_.load(std::memory_order_relaxed)) {
        auto store_flush = [&] { return store_.flush(); };
        if ((wlog_ ? wlog_->flush(seq, store_flush) : store_flush()) != 0) return Refusal::store_error;
    }
    return Refusal::none;
}

Refusal BlkDevice::execute(const Request& r, uint64_t seq) {
    const uint64_t acked = acked_.load(std::memory_order_relaxed);
    switch (r.type) {
    case VIRTIO_BLK_T_IN:
        return read(r);
    case VIRTIO_BLK_T_OUT:
        return write(r, seq, r.data, r.data_bytes);
    case VIRTIO_BLK_T_FLUSH: {
        if (!(acked & feature_bit(VIRTIO_BLK_F_FLUSH))) return Refusal::unsupported;
        auto store_flush = [&] { return store_.flush(); };
        return (wlog_ ? wlog_->flush(seq, store_flush) : store_flush()) == 0 ? Refusal::none : Refusal::store_error;
    }
    case VIRTIO_BLK_T_GET_ID: {
        char id[kGetIdBytes] = {};
        std::memcpy(id, geo_.serial.data(), std::min<size_t>(geo_.serial.size(), sizeof id));
        size_t off = 0;
        for (const auto& v : r.data) {
            const size_t n = std::min(v.iov_len, sizeof id - std::min(off, sizeof id));
            if (n) std::memcpy(v.iov_base, id + off, n);
            off += v.iov_len;
        }
        return Refusal::none;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
        const bool discard = r.type == VIRTIO_BLK_T_DISCARD;
        if (!(acked & feature_bit(discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES))) return Refusal::unsupported;
        if (geo_.read_only) return Refusal::read_only;
        const uint32_t max_seg = discard ? geo_.max_discard_seg : geo_.max_write_zeroes_seg;
        const uint32_t max_sectors = discard ? geo_.max_discard_sectors : geo_.max_write_zeroes_sectors;
        if (r.ranges.size() > max_seg) return Refusal::unsupported;
        for (const auto& rg : r.ranges) {
            // 5.2.6.2: discard MUST be UNSUPP with the unmap flag; other flag bits are reserved.
            if ((discard && rg.flags != 0) || (!discard && (rg.flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)))
                return Refusal::unsupported;
            if (rg.num_sectors > max_sectors) return Refusal::out_of_range;
            if (auto e = check_range(rg.sector, uint64_t{rg.num_sectors} * kSectorSize, data_sectors()); e != Refusal::none) return e;
        }
        for (const auto& rg : r.ranges) {
            const uint64_t off = rg.sector * kSectorSize, len = uint64_t{rg.num_sectors} * kSectorSize;
            auto op = [&] { return discard ? store_.discard(off, len) : store_.write_zeroes(off, len); };
            if ((wlog_ ? wlog_->change(seq, r.type, off, len, op) : op()) != 0) return Refusal::store_error;
        }
        return Refusal::none;
    }
    default:
        return Refusal::unsupported;
    }
}

void BlkDevice::process(const virtio::DescriptorChain& chain, virtio::Completion& c) {
    auto& rec = c.record;
    auto parsed = parse_request(chain);
    if (auto* err = std::get_if<RequestError>(&parsed)) {
        log(LogLevel::warn, "queue {} head {}: {}", rec.queue, chain.head, err->message());
        rec.type = err->type;
        rec.sector = err->sector;
        rec.flags |= trace::kReqMalformed;
        if (err->status != nullptr) {
            *err->status = VIRTIO_BLK_S_IOERR;
            rec.status = VIRTIO_BLK_S_IOERR;
            c.used_len = 1;
        } else {
            rec.status = trace::kStatusNone;
            c.used_len = 0;
        }
        return;
    }
    const Request& r = std::get<Request>(parsed);
    rec.type = r.type;
    rec.sector = r.sector;
    if (!r.ranges.empty()) {
        rec.nsegs = static_cast<uint16_t>(std::min<size_t>(r.ranges.size(), UINT16_MAX));
        for (const auto& rg : r.ranges) {
            rec.bytes += uint64_t{rg.num_sectors} * kSectorSize;
            rec.seg_lens.push_back(static_cast<uint32_t>(std::min<uint64_t>(uint64_t{rg.num_sectors} * kSectorSize, UINT32_MAX)));
        }
    } else {
        rec.bytes = r.data_bytes;
        rec.nsegs = static_cast<uint16_t>(std::min<size_t>(r.seg_lens.size(), UINT16_MAX));
        rec.seg_lens = r.seg_lens;
    }

    const int64_t marker = marker_index(geo_, r);
    if (marker >= 0) rec.flags |= trace::kReqMarker;
    if (powered_off_.load()) {
        *r.status = VIRTIO_BLK_S_IOERR;
        rec.status = VIRTIO_BLK_S_IOERR;
        rec.flags &= ~trace::kReqMarker;  // traced as the failed request it is
        c.used_len = 1;
        // Marked like an injection, so a check can tell the rig's IOERR from a device bug.
        rec.fault_action = trace::kFaultPowerOff;
        return;
    }
    if (marker >= 0) {
        if (faults_) faults_->marker(static_cast<uint32_t>(marker));
        if (wlog_) wlog_->mark(fmt::format("blkrig marker {}", marker));
    }
    Refusal result = Refusal::none;
    faults::Decision fault;
    // Marker reads are the rig's own boundaries: faults never touch them.
    if (faults_ && marker < 0)
        fault = faults_->decide(r.type, r.sector, r.ranges.empty() ? r.data_bytes / kSectorSize : rec.bytes / kSectorSize, rec.queue,
                                c.queue_depth, rec.t_submit_ns > start_ns_ ? rec.t_submit_ns - start_ns_ : 0);
    if (fault.fire) {
        rec.fault_rule = fault.rule_id;
        rec.fault_action = static_cast<uint16_t>(fault.action.kind);
        rec.fault_delay_ns = fault.action.delay_ns;
        log(LogLevel::info, "queue {} seq {}: fault rule {} ({}) on {} sector {}", rec.queue, rec.seq, fault.rule_id,
            faults::to_string(fault.action.kind), trace::op_label(r.type), r.sector);
        result = apply(r, rec.seq, faults::effect_of(fault.action, r.type, r.data_bytes), c);
    } else if (const auto started = c.exec ? start_async(r, c) : StoreExec::Started::no; started == StoreExec::Started::queued) {
        return;  // status and used_len are set as the queue reaps it
    } else if (started == StoreExec::Started::no) {
        result = execute(r, rec.seq);
    }
    if (result != Refusal::none && result != Refusal::unsupported)
        log(LogLevel::debug, "queue {} head {} seq {}: {} sector {} bytes {}: {}", rec.queue, chain.head, rec.seq,
            trace::op_label(r.type), r.sector, r.data_bytes, to_string(result));
    const uint8_t st = status(result);
    *r.status = st;
    rec.status = st;
    const bool returns_data = r.type == VIRTIO_BLK_T_IN || r.type == VIRTIO_BLK_T_GET_ID;
    c.used_len = static_cast<uint32_t>((returns_data && result == Refusal::none ? r.data_bytes : 0) + 1);
    // The marker read itself is answered: the cut falls between the step
    // that ended and whatever the guest does next.
    if (marker >= 0 && plan_.at_marker >= 0 && marker == plan_.at_marker && wlog_ && !powered_off_) {
        const auto rep = power_cut(plan_.mode, plan_.seed, plan_.share);
        if (!plan_.report_path.empty() && !write_cut_report(plan_.report_path, rep)) {
            report_failed_ = true;  // the device exits 1: the run asked for a report it did not get
            log(LogLevel::error, "power cut report {}: cannot write it: {}", plan_.report_path, std::strerror(errno));
        }
    }
}

void BlkDevice::completed(const virtio::Completion& c) {
    const bool marker = c.record.flags & trace::kReqMarker;
    if (!marker) stats_.count(c.record);
    if (!trace_) return;
    if (marker && c.record.status == VIRTIO_BLK_S_OK)
        trace_->marker({c.record.seq, c.record.t_complete_ns, marker_at(geo_, c.record.sector), c.record.queue, c.record.head});
    else trace_->record(c.record);  // with its fault record, if a fault touched it
}

void BlkDevice::left_in_flight(std::vector<virtio::Completion>&& left) {
    std::lock_guard lock(unfinished_mu_);
    for (auto& c : left) unfinished_.insert_or_assign(c.record.seq, std::move(c));
}

void BlkDevice::resumed(uint64_t seq) {
    std::lock_guard lock(unfinished_mu_);
    unfinished_.erase(seq);
}

size_t BlkDevice::record_unfinished() {
    std::map<uint64_t, virtio::Completion> left;
    {
        std::lock_guard lock(unfinished_mu_);
        left.swap(unfinished_);
    }
    if (!trace_ || left.empty()) return left.size();
    const uint64_t now = monotonic_ns();
    for (auto& [seq, c] : left) {
        c.record.flags |= trace::kReqUnfinished;
        c.record.status = trace::kStatusNone;
        c.record.t_complete_ns = std::max(now, c.record.t_submit_ns);
        trace_->record(c.record);
    }
    return left.size();
}

void BlkDevice::queue_broken(uint16_t queue, uint16_t head, const std::string& why) {
    log(LogLevel::error, "queue {} head {}: {}; the queue is stopped until the driver resets it", queue, head, why);
    if (trace_) trace_->event({monotonic_ns(), trace::EventCode::queue_broken, queue, head, why});
}

void BlkDevice::note(trace::EventCode code, uint16_t queue, const std::string& text) {
    if (trace_) trace_->event({monotonic_ns(), code, queue, 0, text});
}

}  // namespace blkrig::blk
