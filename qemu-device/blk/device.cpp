#include "blk/device.hpp"

#include "common/log.hpp"

#include <signal.h>
#include <unistd.h>

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
    case Refusal::powered_off: return "device powered off (power cut)";
    }
    return "?";
}

namespace {
constexpr uint64_t bit(int n) { return 1ull << n; }
}  // namespace

BlkDevice::BlkDevice(Geometry g, store::Store& store, trace::Writer* trace, faults::Engine* faults, store::WriteLog* wlog,
                     PowerCutPlan plan)
    : geo_(std::move(g)), store_(store), trace_(trace), faults_(faults), wlog_(wlog), plan_(std::move(plan)),
      start_ns_(monotonic_ns()), writeback_(geo_.write_cache) {}

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
// The first `bytes` bytes of a payload spread over iovecs.
std::vector<iovec> prefix(const std::vector<iovec>& data, uint64_t bytes) {
    std::vector<iovec> head;
    for (const auto& v : data) {
        if (bytes == 0) break;
        const size_t n = std::min<uint64_t>(bytes, v.iov_len);
        head.push_back({v.iov_base, n});
        bytes -= n;
    }
    return head;
}

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
    if (store_bytes && store_.read(r.sector * kSectorSize, prefix(r.data, store_bytes)) != 0) return Refusal::store_error;
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
        if (!(acked & bit(VIRTIO_BLK_F_FLUSH))) return Refusal::unsupported;
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

    if (const int64_t m = marker_index(r); m >= 0) {
        c.marker = true;
        c.marker_index = static_cast<uint32_t>(m);
    }
    if (powered_off_.load()) {
        *r.status = VIRTIO_BLK_S_IOERR;
        rec.status = VIRTIO_BLK_S_IOERR;
        c.marker = false;  // traced as the failed request it is
        c.used_len = 1;
        // Marked like an injection, so a check can tell the rig's IOERR from a device bug.
        c.fault_action = trace::kFaultPowerOff;
        return;
    }
    if (c.marker) {
        if (faults_) faults_->marker(c.marker_index);
        if (wlog_) wlog_->mark(fmt::format("blkrig marker {}", c.marker_index));
    }
    Refusal result = Refusal::none;
    faults::Decision fault;
    // Marker reads are the rig's own boundaries: faults never touch them.
    if (faults_ && !c.marker)
        fault = faults_->decide(r.type, r.sector, r.ranges.empty() ? r.data_bytes / kSectorSize : rec.bytes / kSectorSize, rec.queue,
                                c.queue_depth, rec.t_submit_ns > start_ns_ ? rec.t_submit_ns - start_ns_ : 0);
    if (fault.fire) {
        c.fault_rule = fault.rule_id;
        c.fault_action = static_cast<uint16_t>(fault.action.kind);
        c.fault_delay_ns = fault.action.delay_ns;
        log(LogLevel::info, "queue {} seq {}: fault rule {} ({}) on {} sector {}", rec.queue, rec.seq, fault.rule_id,
            faults::to_string(fault.action.kind), trace::op_label(r.type), r.sector);
        result = run_fault(r, rec.seq, fault.action, c);
    } else {
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
    if (c.marker && plan_.at_marker >= 0 && c.marker_index == static_cast<uint64_t>(plan_.at_marker) && wlog_ && !powered_off_) {
        const auto rep = power_cut(plan_.mode, plan_.seed, plan_.share);
        if (!plan_.report_path.empty()) {
            std::FILE* f = std::fopen(plan_.report_path.c_str(), "w");
            const std::string text = rep.dump(2) + "\n";
            bool ok = f && std::fwrite(text.data(), 1, text.size(), f) == text.size();
            if (f && std::fclose(f) != 0) ok = false;
            if (!ok) {
                report_failed_ = true;  // the device exits 1: the run asked for a report it did not get
                log(LogLevel::error, "power cut report {}: cannot write it: {}", plan_.report_path, std::strerror(errno));
            }
        }
    }
}

namespace {
// XORs byte `offset` of a payload spread over iovecs; false if it is beyond it.
bool xor_byte(const std::vector<iovec>& data, uint64_t offset, uint8_t mask) {
    for (const auto& v : data) {
        if (offset < v.iov_len) {
            static_cast<uint8_t*>(v.iov_base)[offset] ^= mask;
            return true;
        }
        offset -= v.iov_len;
    }
    return false;
}
}  // namespace

Refusal BlkDevice::run_fault(const Request& r, uint64_t seq, const faults::Action& a, virtio::Completion& c) {
    using faults::ActionKind;
    switch (a.kind) {
    case ActionKind::ioerr: return Refusal::injected_ioerr;
    case ActionKind::unsupp: return Refusal::injected_unsupp;
    case ActionKind::delay:
        // Done now, on the used ring later: the queue goes on meanwhile, so
        // later requests can overtake this one.
        c.defer = virtio::Defer::until;
        c.defer_until_ns = monotonic_ns() + a.delay_ns;
        return execute(r, seq);
    case ActionKind::hold:
        c.defer = virtio::Defer::hold;
        return execute(r, seq);
    case ActionKind::reorder:
        c.defer = virtio::Defer::reorder;
        c.reorder_after = a.count;
        return execute(r, seq);
    case ActionKind::torn: {
        if (r.type != VIRTIO_BLK_T_OUT) return execute(r, seq);
        const uint64_t keep = std::min<uint64_t>(uint64_t{a.count} * kSectorSize, r.data_bytes);
        Refusal res = Refusal::none;
        if (keep) res = write(r, seq, prefix(r.data, keep), keep);
        else if (geo_.read_only) res = Refusal::read_only;
        if (res != Refusal::none) return res;
        return a.torn_ok || keep == r.data_bytes ? Refusal::none : Refusal::injected_ioerr;
    }
    case ActionKind::corrupt: {
        if (r.type == VIRTIO_BLK_T_IN) {
            const Refusal res = execute(r, seq);
            if (res == Refusal::none) xor_byte(r.data, a.offset, a.mask);
            return res;
        }
        if (r.type != VIRTIO_BLK_T_OUT || a.offset >= r.data_bytes) return execute(r, seq);
        // The guest's buffer stays as it is: the store gets a changed copy.
        std::vector<uint8_t> copy(r.data_bytes);
        uint64_t pos = 0;
        for (const auto& v : r.data) {
            std::memcpy(copy.data() + pos, v.iov_base, v.iov_len);
            pos += v.iov_len;
        }
        copy[a.offset] ^= a.mask;
        return write(r, seq, {iovec{copy.data(), copy.size()}}, copy.size());
    }
    case ActionKind::lie:
        // Nothing reaches the store; a lying flush leaves the cache volatile.
        return Refusal::none;
    case ActionKind::crash:
        // A back-end crash mid-request: nothing is executed, completed or
        // flushed; the request stays in the inflight region for the next
        // process. The trace already holds every record made so far when
        // it is continued (--trace-continue writes through).
        log(LogLevel::warn, "queue {} seq {}: fault rule: crash (SIGKILL) with {} sector {} in flight", c.record.queue, seq,
            trace::op_label(r.type), r.sector);
        ::kill(::getpid(), SIGKILL);
        return Refusal::none;
    }
    return execute(r, seq);
}

nlohmann::json BlkDevice::power_cut(store::CutMode mode, uint64_t seed, double share) {
    if (!wlog_) throw std::logic_error("the device has no write log (start it with --crash-model)");
    powered_off_ = true;
    const auto rep = wlog_->power_cut(mode, seed, share);
    auto list = [](const std::vector<store::LoggedWrite>& ws) {
        nlohmann::json a = nlohmann::json::array();
        for (const auto& w : ws)
            a.push_back({{"seq", w.seq}, {"op", trace::op_label(w.type)}, {"sector", w.offset / kSectorSize}, {"sectors", w.bytes / kSectorSize}});
        return a;
    };
    nlohmann::json out = {{"mode", store::to_string(mode)}, {"seed", seed}, {"dropped", list(rep.dropped)}, {"kept", list(rep.kept)}};
    if (mode == store::CutMode::drop_random) out["share"] = share;
    if (rep.error) out["store_error"] = std::strerror(-rep.error);
    const std::string text = fmt::format("power cut ({}): {} unflushed write(s) dropped, {} kept{}", store::to_string(mode),
                                         rep.dropped.size(), rep.kept.size(), rep.error ? "; the store failed while restoring" : "");
    log(rep.error ? LogLevel::error : LogLevel::info, "{}", text);
    if (trace_) trace_->event({monotonic_ns(), trace::EventCode::power_cut, 0, 0, text});
    return out;
}

void BlkDevice::power_on() {
    powered_off_ = false;
    log(LogLevel::info, "power on: serving the surviving contents");
}

namespace {
// A request's stats row: its op's place in the table, or the last ("other").
size_t stat_slot(uint32_t type) {
    const ops::Op* o = ops::find(type);
    return o ? static_cast<size_t>(o - std::begin(ops::kOps)) : std::size(ops::kOps);
}
std::string stat_name(size_t slot) { return slot < std::size(ops::kOps) ? std::string(ops::kOps[slot].name) : "other"; }
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
        out[stat_name(i)] = {{"count", n},
                              {"bytes", s.bytes.load()},
                              {"errors", s.errors.load()},
                              {"latency_p50_ns_below", pct(0.5)},
                              {"latency_p99_ns_below", pct(0.99)}};
    }
    if (wlog_) {
        out["write_log"] = {{"unflushed_writes", wlog_->unflushed()}, {"unflushed_bytes", wlog_->unflushed_bytes()}};
        if (auto e = wlog_->export_error(); !e.empty()) out["write_log"]["export_error"] = e;
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
    if (c.fault_rule || c.fault_action) trace_->fault({c.record.seq, c.fault_rule, c.fault_action, c.fault_delay_ns});
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
        if (c.fault_rule || c.fault_action) trace_->fault({c.record.seq, c.fault_rule, c.fault_action, c.fault_delay_ns});
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
