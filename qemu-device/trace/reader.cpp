#include "trace/reader.hpp"
#include "common/sectors.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

namespace blkrig::trace {

uint64_t Trace::dropped_total() const {
    uint64_t n = 0;
    for (const auto& d : dropped) n += d.count;
    return n;
}

bool Trace::complete() const { return incompleteness().empty(); }

std::string Trace::incompleteness() const {
    if (!truncation.empty()) return truncation;
    if (!end) return "no end record: the device did not close the trace (killed or still running)";
    if (end->dropped > 0 || dropped_total() > 0)
        return fmt::format("{} records were dropped because the trace writer fell behind",
                           std::max(end->dropped, dropped_total()));
    // Impossible request records were still written as requests.
    const auto bad_requests = static_cast<uint64_t>(std::count_if(bad.begin(), bad.end(), [](const BadRecord& b) { return b.kind == RecordKind::request; }));
    if (end->requests != requests.size() + bad_requests)
        return fmt::format("end record counts {} requests but the file holds {}", end->requests, requests.size() + bad_requests);
    return {};
}

std::string BadRecord::describe() const {
    const char* what = kind == RecordKind::request ? "request" : kind == RecordKind::marker ? "marker" : kind == RecordKind::fault ? "fault"
                       : kind == RecordKind::event                                          ? "event"
                                                                                            : "record";
    return fmt::format("record at byte {} ({}{}): {}: {}", offset, what, seq ? fmt::format(" seq {}", *seq) : std::string(), field, message);
}

namespace {

template <typename T>
T get(std::span<const uint8_t> b, size_t off) {
    T v;
    std::memcpy(&v, b.data() + off, sizeof v);
    return v;
}

struct Problem {
    const char* field;
    std::string message;
};

bool known_op(uint32_t type) {
    switch (type) {
    case 0: case 1: case 4: case 8: case 10: case 11: case 13: case 14: return true;
    default: return false;
    }
}

// What the device could not have written into a request record, given the
// header. A refused request (status other than ok) may name anything the
// guest sent, out of range or of an unknown type: that is what it was
// refused for. One the device completed with ok cannot.
std::optional<Problem> check(const RequestBody& rb, uint16_t flags, const FileHeader& h) {
    if (rb.queue >= h.num_queues) return Problem{"queue", fmt::format("{}, but the header says the device has {} queue(s)", rb.queue, h.num_queues)};
    if (rb.t_complete_ns < rb.t_submit_ns)
        return Problem{"t_complete_ns", fmt::format("{} is before t_submit_ns {}: completed before it was submitted", rb.t_complete_ns, rb.t_submit_ns)};
    if (rb.status != kStatusOk && rb.status != kStatusIoErr && rb.status != kStatusUnsupp && rb.status != kStatusNone)
        return Problem{"status", fmt::format("{} is not a status (0 ok, 1 ioerr, 2 unsupp, 255 none)", rb.status)};
    const uint16_t known = kReqMalformed | kReqSegsTruncated | kReqResubmitted | kReqUnfinished | (h.version >= 2 ? kReqOneSegment : 0);
    if (flags & ~known) return Problem{"flags", fmt::format("{:#x} has bits no device sets", flags)};
    if ((flags & kReqOneSegment) && (rb.nsegs != 1 || rb.nsegs_recorded != 0 || rb.bytes > UINT32_MAX))
        return Problem{"flags", fmt::format("one segment of {} bytes, but nsegs {} and {} lengths recorded", rb.bytes, rb.nsegs, rb.nsegs_recorded)};
    if (rb.nsegs_recorded > rb.nsegs || rb.nsegs_recorded > kMaxRecordedSegs)
        return Problem{"nsegs_recorded", fmt::format("{} segment lengths recorded for {} segments (at most {})", rb.nsegs_recorded, rb.nsegs, kMaxRecordedSegs)};
    if (rb.status != kStatusOk) return std::nullopt;
    if (flags & kReqMalformed) return Problem{"status", "ok on a request flagged malformed"};
    if (!known_op(rb.type)) return Problem{"type", fmt::format("{} completed ok, but the device completes no such request", rb.type)};
    // Read, write; discard and write-zeroes of one range (several ranges need not be contiguous).
    const bool ranged = rb.type == 0 || rb.type == 1 || ((rb.type == 11 || rb.type == 13 || rb.type == 14) && rb.nsegs <= 1);
    if (!ranged) return std::nullopt;
    const uint64_t sectors = sectors::covering(rb.bytes);
    if (rb.sector > h.capacity_sectors || sectors > h.capacity_sectors - rb.sector)
        return Problem{"sector", fmt::format("{} + {} sectors ends past the capacity of {} sectors (the header's, marker region included)", rb.sector,
                                             sectors, h.capacity_sectors)};
    return std::nullopt;
}

std::optional<Problem> check(const MarkerBody& mb, const FileHeader& h) {
    if (mb.queue >= h.num_queues) return Problem{"queue", fmt::format("{}, but the header says the device has {} queue(s)", mb.queue, h.num_queues)};
    const uint64_t block_sectors = std::max<uint64_t>(h.logical_block_size / sectors::kSize, 1);
    if (mb.index >= h.capacity_sectors / block_sectors)
        return Problem{"index", fmt::format("marker {} lies past the capacity of {} sectors", mb.index, h.capacity_sectors)};
    return std::nullopt;
}

std::optional<Problem> check(const FaultBody& fb) {
    if (std::string_view(fault_action_name(fb.action)) == "unknown")
        return Problem{"action", fmt::format("{} is not a fault action (1..8, or {} power_off)", fb.action, kFaultPowerOff)};
    if ((fb.rule_id == 0) != (fb.action == kFaultPowerOff))
        return Problem{"rule_id", fmt::format("{} with action {}: only power_off has no rule", fb.rule_id, fault_action_name(fb.action))};
    return std::nullopt;
}

std::optional<Problem> check(const EventBody& eb, const FileHeader& h) {
    if (std::string_view(event_name(static_cast<EventCode>(eb.code))) == "unknown")
        return Problem{"code", fmt::format("{} is not an event code", eb.code)};
    if (eb.queue >= h.num_queues && eb.queue != 0)
        return Problem{"queue", fmt::format("{}, but the header says the device has {} queue(s)", eb.queue, h.num_queues)};
    return std::nullopt;
}

}  // namespace

Trace parse_trace(std::span<const uint8_t> b) {
    Trace t;
    if (b.size() < sizeof(FileHeader)) throw ReadError(fmt::format("not a blkrig trace: {} bytes, shorter than the header", b.size()));
    t.header = get<FileHeader>(b, 0);
    if (std::memcmp(t.header.magic, kMagic, sizeof kMagic) != 0) throw ReadError("not a blkrig trace: bad magic");
    if (t.header.version < kOldestVersion || t.header.version > kVersion)
        throw ReadError(fmt::format("trace format version {} is not supported (this build reads versions {} to {})", t.header.version,
                                    kOldestVersion, kVersion));
    size_t off = sizeof(FileHeader);
    if (t.header.config_json_len > b.size() - off) throw ReadError("trace header cut short (device configuration)");
    t.config_json.assign(reinterpret_cast<const char*>(b.data() + off), t.header.config_json_len);
    off += t.header.config_json_len;
    off = (off + 7) / 8 * 8;
    // At most one request per smallest record: reserved, not touched, so a
    // million requests grow no vector (each growth copied and faulted pages).
    if (off < b.size()) {
        const size_t most = (b.size() - off) / (sizeof(RecordPrefix) + sizeof(RequestBody));
        t.requests.reserve(most);
        t.order.reserve(most);
    }

    while (off < b.size()) {
        if (b.size() - off < sizeof(RecordPrefix)) {
            t.truncation = fmt::format("file ends inside a record prefix at byte {}", off);
            break;
        }
        const auto p = get<RecordPrefix>(b, off);
        if (p.length < sizeof(RecordPrefix) || p.length % 8 || p.length > b.size() - off) {
            t.truncation = fmt::format("record at byte {} has length {} ({} bytes left)", off, p.length, b.size() - off);
            break;
        }
        const auto body = b.subspan(off + sizeof p, p.length - sizeof p);
        auto too_short = [&](size_t need) {
            if (body.size() >= need) return false;
            t.truncation = fmt::format("record at byte {} (kind {}) is {} bytes, needs {}", off, p.kind, p.length, need + sizeof p);
            return true;
        };
        switch (static_cast<RecordKind>(p.kind)) {
        case RecordKind::request: {
            if (too_short(sizeof(RequestBody))) break;
            const auto rb = get<RequestBody>(body, 0);
            if (too_short(sizeof(RequestBody) + 4ull * rb.nsegs_recorded)) break;
            if (auto why = check(rb, p.flags, t.header)) {
                t.bad.push_back({off, RecordKind::request, rb.seq, why->field, std::move(why->message)});
                break;
            }
            RequestRecord r;
            static_cast<RequestBody&>(r) = rb;
            r.nsegs_recorded = 0;  // in memory seg_lens says it
            r.flags = p.flags;
            if (p.flags & kReqOneSegment) {
                r.seg_lens.assign(1, static_cast<uint32_t>(rb.bytes));
                r.flags = p.flags & ~kReqOneSegment;  // how it was stored, not what it says
            } else {
                r.seg_lens.resize(rb.nsegs_recorded);
                if (rb.nsegs_recorded) std::memcpy(r.seg_lens.data(), body.data() + sizeof rb, 4ull * rb.nsegs_recorded);
            }
            t.order.push_back({RecordKind::request, t.requests.size()});
            t.requests.push_back(std::move(r));
            break;
        }
        case RecordKind::dropped: {
            if (too_short(sizeof(DroppedBody))) break;
            const auto d = get<DroppedBody>(body, 0);
            t.order.push_back({RecordKind::dropped, t.dropped.size()});
            t.dropped.push_back({d.count, d.t_ns});
            break;
        }
        case RecordKind::event: {
            if (too_short(sizeof(EventBody))) break;
            const auto eb = get<EventBody>(body, 0);
            if (too_short(sizeof(EventBody) + eb.text_len)) break;
            if (auto why = check(eb, t.header)) {
                t.bad.push_back({off, RecordKind::event, std::nullopt, why->field, std::move(why->message)});
                break;
            }
            EventRecord e;
            e.t_ns = eb.t_ns;
            e.code = static_cast<EventCode>(eb.code);
            e.queue = eb.queue;
            e.head = eb.head;
            e.text.assign(reinterpret_cast<const char*>(body.data() + sizeof eb), eb.text_len);
            t.order.push_back({RecordKind::event, t.events.size()});
            t.events.push_back(std::move(e));
            break;
        }
        case RecordKind::marker: {
            if (too_short(sizeof(MarkerBody))) break;
            const auto mb = get<MarkerBody>(body, 0);
            if (auto why = check(mb, t.header)) {
                t.bad.push_back({off, RecordKind::marker, mb.seq, why->field, std::move(why->message)});
                break;
            }
            t.order.push_back({RecordKind::marker, t.markers.size()});
            t.markers.push_back({mb.seq, mb.t_ns, mb.index, mb.queue, mb.head});
            break;
        }
        case RecordKind::fault: {
            if (too_short(sizeof(FaultBody))) break;
            const auto fb = get<FaultBody>(body, 0);
            if (auto why = check(fb)) {
                t.bad.push_back({off, RecordKind::fault, fb.seq, why->field, std::move(why->message)});
                break;
            }
            t.order.push_back({RecordKind::fault, t.faults.size()});
            t.faults.push_back({fb.seq, fb.rule_id, fb.action, fb.delay_ns});
            break;
        }
        case RecordKind::end: {
            if (too_short(sizeof(EndBody))) break;
            t.end = get<EndBody>(body, 0);
            t.order.push_back({RecordKind::end, 0});
            break;
        }
        default:
            // Unknown kinds from a newer writer are skipped: the length says how far.
            break;
        }
        if (!t.truncation.empty()) break;
        off += p.length;
    }
    return t;
}

Trace read_trace(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ReadError(fmt::format("cannot open trace file {}: {}", path, std::strerror(errno)));
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
        return parse_trace(bytes);
    } catch (const ReadError& e) {
        throw ReadError(fmt::format("{}: {}", path, e.what()));
    }
}

}  // namespace blkrig::trace
