#include "blk/device.hpp"

#include "common/log.hpp"

#include <bit>
#include <chrono>
#include <cstdio>
#include <thread>
#include <cstring>
#include <variant>

namespace blkrig::blk {

uint8_t status(Refusal r) {
    switch (r) {
    case Refusal::none: return VIRTIO_BLK_S_OK;
    case Refusal::unsupported:
    case Refusal::injected_unsupp: return VIRTIO_BLK_S_UNSUPP;
    default: return VIRTIO_BLK_S_IOERR;
    }
}

const char* to_string(Refusal r) {
    switch (r) {
    case Refusal::none: return "ok";
    case Refusal::malformed: return "malformed request";
    case Refusal::unaligned_length: return "payload not a multiple of 512 bytes";
    case Refusal::out_of_range: return "beyond the capacity";
    case Refusal::read_only: return "device is read-only";
    case Refusal::unsupported: return "unsupported request type";
    case Refusal::store_error: return "store I/O error";
    case Refusal::injected_ioerr: return "fault rule: IOERR";
    case Refusal::injected_unsupp: return "fault rule: UNSUPP";
    }
    return "?";
}

namespace {
constexpr uint64_t bit(int n) { return 1ull << n; }
}  // namespace

BlkDevice::BlkDevice(Geometry g, store::Store& store, trace::Writer* trace, faults::Engine* faults)
    : geo_(std::move(g)), store_(store), trace_(trace), faults_(faults), writeback_(geo_.write_cache) {}

uint64_t BlkDevice::features() const {
    uint64_t f = bit(virtio::kFVersion1) | bit(virtio::kFIndirectDesc) | bit(virtio::kFEventIdx) | bit(VIRTIO_BLK_F_SEG_MAX) |
                 bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_MQ) | bit(VIRTIO_BLK_F_TOPOLOGY);
    if (geo_.size_max) f |= bit(VIRTIO_BLK_F_SIZE_MAX);
    if (geo_.write_cache) f |= bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_CONFIG_WCE);
    if (geo_.read_only) f |= bit(VIRTIO_BLK_F_RO);
    if (geo_.discard && !geo_.read_only) f |= bit(VIRTIO_BLK_F_DISCARD);
    if (geo_.write_zeroes && !geo_.read_only) f |= bit(VIRTIO_BLK_F_WRITE_ZEROES);
    return f;
}

void BlkDevice::set_features(uint64_t acked) {
    acked_ = acked;
    // A driver that did not negotiate FLUSH cannot flush: the device must
    // then behave as write-through (5.2.6.2).
    writeback_ = geo_.write_cache && (acked & bit(VIRTIO_BLK_F_FLUSH));
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

Refusal BlkDevice::check_range(uint64_t sector, uint64_t bytes, uint64_t limit) const {
    if (bytes % kSectorSize) return Refusal::unaligned_length;
    const uint64_t n = bytes / kSectorSize;
    if (sector > limit || n > limit - sector) return Refusal::out_of_range;
    return Refusal::none;
}

int64_t BlkDevice::marker_index(const Request& r) const {
    if (geo_.marker_sectors == 0 || r.type != VIRTIO_BLK_T_IN || r.data_bytes != geo_.logical_block_size) return -1;
    const uint64_t base = data_sectors();
    if (r.sector < base || r.sector >= geo_.capacity_sectors) return -1;
    const uint64_t per_block = geo_.logical_block_size / kSectorSize;
    if ((r.sector - base) % per_block) return -1;
    return static_cast<int64_t>((r.sector - base) / per_block);
}

namespace {
// Fills bytes [skip, end) of the payload with the marker pattern: each
// 512-byte sector says which marker sector it is, so a guest can check it.
void fill_marker(const std::vector<iovec>& data, uint64_t first_marker_sector, uint64_t skip, uint64_t end) {
    std::vector<char> flat(end - skip, 0);
    for (uint64_t off = 0; off < flat.size(); off += kSectorSize)
        std::snprintf(flat.data() + off, kSectorSize, "BLKRIG-MARKER %llu\n",
                      static_cast<unsigned long long>(first_marker_sector + off / kSectorSize));
    uint64_t pos = 0;
    for (const auto& v : data) {
        const uint64_t lo = std::max(pos, skip), hi = std::min(pos + v.iov_len, end);
        if (lo < hi) std::memcpy(static_cast<uint8_t*>(v.iov_base) + (lo - pos), flat.data() + (lo - skip), hi - lo);
        pos += v.iov_len;
    }
}
}  // namespace

Refusal BlkDevice::read(const Request& r) {
    if (auto e = check_range(r.sector, r.data_bytes, geo_.capacity_sectors); e != Refusal::none) return e;
    const uint64_t end = r.sector + r.data_bytes / kSectorSize;
    const uint64_t base = data_sectors();
    if (end <= base) return store_.read(r.sector * kSectorSize, r.data) == 0 ? Refusal::none : Refusal::store_error;
    // Reaches into the marker region: the store part first, then the pattern.
    const uint64_t store_bytes = r.sector < base ? (base - r.sector) * kSectorSize : 0;
    if (store_bytes) {
        std::vector<iovec> head;
        uint64_t left = store_bytes;
        for (const auto& v : r.data) {
            if (left == 0) break;
            const size_t n = std::min<uint64_t>(left, v.iov_len);
            head.push_back({v.iov_base, n});
            left -= n;
        }
        if (store_.read(r.sector * kSectorSize, head) != 0) return Refusal::store_error;
    }
    fill_marker(r.data, std::max(r.sector, base) - base, store_bytes, r.data_bytes);
    return Refusal::none;
}

Refusal BlkDevice::execute(const Request& r) {
    const uint64_t acked = acked_.load(std::memory_order_relaxed);
    switch (r.type) {
    case VIRTIO_BLK_T_IN:
        return read(r);
    case VIRTIO_BLK_T_OUT: {
        if (geo_.read_only) return Refusal::read_only;
        // The marker region is reserved: writes there are refused.
        if (auto e = check_range(r.sector, r.data_bytes, data_sectors()); e != Refusal::none) return e;
        if (store_.write(r.sector * kSectorSize, r.data) != 0) return Refusal::store_error;
        if (!writeback_.load(std::memory_order_relaxed) && store_.flush() != 0) return Refusal::store_error;
        return Refusal::none;
    }
    case VIRTIO_BLK_T_FLUSH:
        if (!(acked & bit(VIRTIO_BLK_F_FLUSH))) return Refusal::unsupported;
        return store_.flush() == 0 ? Refusal::none : Refusal::store_error;
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
        if (!(acked & bit(discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES))) return Refusal::unsupported;
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
            if ((discard ? store_.discard(off, len) : store_.write_zeroes(off, len)) != 0) return Refusal::store_error;
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

    if (const int64_t m = marker_index(r); m >= 0) {
        c.marker = true;
        c.marker_index = static_cast<uint32_t>(m);
        if (faults_) faults_->marker(c.marker_index);
    }
    Refusal result = Refusal::none;
    faults::Decision fault;
    // Marker reads are the rig's own boundaries: faults never touch them.
    if (faults_ && !c.marker) fault = faults_->decide(r.type, r.sector, r.ranges.empty() ? r.data_bytes / kSectorSize : rec.bytes / kSectorSize, rec.queue);
    if (fault.fire) {
        c.fault_rule = fault.rule_id;
        c.fault_action = static_cast<uint16_t>(fault.action.kind);
        c.fault_delay_ns = fault.action.delay_ns;
        log(LogLevel::info, "queue {} seq {}: fault rule {} ({}) on {} sector {}", rec.queue, rec.seq, fault.rule_id,
            faults::to_string(fault.action.kind), trace::op_label(r.type), r.sector);
    }
    if (fault.fire && fault.action.kind == faults::ActionKind::ioerr) result = Refusal::injected_ioerr;
    else if (fault.fire && fault.action.kind == faults::ActionKind::unsupp) result = Refusal::injected_unsupp;
    else {
        // A delay holds this queue's thread: the other queues go on.
        if (fault.fire && fault.action.kind == faults::ActionKind::delay) std::this_thread::sleep_for(std::chrono::nanoseconds(fault.action.delay_ns));
        result = execute(r);
    }
    if (result != Refusal::none && result != Refusal::unsupported)
        log(LogLevel::debug, "queue {} head {} seq {}: {} sector {} bytes {}: {}", rec.queue, chain.head, rec.seq,
            trace::op_label(r.type), r.sector, r.data_bytes, to_string(result));
    const uint8_t st = status(result);
    *r.status = st;
    rec.status = st;
    const bool returns_data = r.type == VIRTIO_BLK_T_IN || r.type == VIRTIO_BLK_T_GET_ID;
    c.used_len = static_cast<uint32_t>((returns_data && result == Refusal::none ? r.data_bytes : 0) + 1);
}

namespace {
size_t stat_slot(uint32_t type) {
    switch (type) {
    case VIRTIO_BLK_T_IN: return 0;
    case VIRTIO_BLK_T_OUT: return 1;
    case VIRTIO_BLK_T_FLUSH: return 2;
    case VIRTIO_BLK_T_GET_ID: return 3;
    case VIRTIO_BLK_T_DISCARD: return 4;
    case VIRTIO_BLK_T_WRITE_ZEROES: return 5;
    default: return 6;
    }
}
constexpr const char* kStatNames[] = {"read", "write", "flush", "get_id", "discard", "write_zeroes", "other"};
}  // namespace

nlohmann::json BlkDevice::stats_json() const {
    nlohmann::json out = nlohmann::json::object();
    for (size_t i = 0; i < kStatOps; ++i) {
        const auto& s = stats_[i];
        const uint64_t n = s.count.load();
        if (n == 0) continue;
        auto pct = [&](double p) -> uint64_t {
            const auto want = static_cast<uint64_t>(p * static_cast<double>(n) + 0.5);
            uint64_t seen = 0;
            for (size_t b = 0; b < s.latency_log2.size(); ++b) {
                seen += s.latency_log2[b].load();
                if (seen >= std::max<uint64_t>(want, 1)) return uint64_t{1} << b;
            }
            return 0;
        };
        out[kStatNames[i]] = {{"count", n},
                              {"bytes", s.bytes.load()},
                              {"errors", s.errors.load()},
                              {"latency_p50_ns_below", pct(0.5)},
                              {"latency_p99_ns_below", pct(0.99)}};
    }
    return out;
}

void BlkDevice::completed(const virtio::Completion& c) {
    if (!c.marker) {
        auto& s = stats_[stat_slot(c.record.type)];
        s.count.fetch_add(1, std::memory_order_relaxed);
        s.bytes.fetch_add(c.record.bytes, std::memory_order_relaxed);
        if (c.record.status != VIRTIO_BLK_S_OK) s.errors.fetch_add(1, std::memory_order_relaxed);
        const uint64_t lat = c.record.t_complete_ns - std::min(c.record.t_submit_ns, c.record.t_complete_ns);
        const size_t b = std::min<size_t>(s.latency_log2.size() - 1, static_cast<size_t>(std::bit_width(lat)));
        s.latency_log2[b].fetch_add(1, std::memory_order_relaxed);
    }
    if (!trace_) return;
    if (c.marker && c.record.status == VIRTIO_BLK_S_OK)
        trace_->marker({c.record.seq, c.record.t_complete_ns, c.marker_index, c.record.queue, c.record.head});
    else trace_->record(c.record);
    if (c.fault_rule) trace_->fault({c.record.seq, c.fault_rule, c.fault_action, c.fault_delay_ns});
}

void BlkDevice::queue_broken(uint16_t queue, uint16_t head, const std::string& why) {
    log(LogLevel::error, "queue {} head {}: {}; the queue is stopped until the driver resets it", queue, head, why);
    if (trace_) trace_->event({monotonic_ns(), trace::EventCode::queue_broken, queue, head, why});
}

void BlkDevice::note(trace::EventCode code, uint16_t queue, const std::string& text) {
    if (trace_) trace_->event({monotonic_ns(), code, queue, 0, text});
}

}  // namespace blkrig::blk
