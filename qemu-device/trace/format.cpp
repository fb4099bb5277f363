#include "trace/format.hpp"

#include "common/ops.hpp"

#include <fmt/format.h>

#include <cstring>

namespace blkrig::trace {

const char* event_name(EventCode c) {
    switch (c) {
    case EventCode::session_start: return "session_start";
    case EventCode::session_end: return "session_end";
    case EventCode::queue_broken: return "queue_broken";
    case EventCode::queue_started: return "queue_started";
    case EventCode::queue_stopped: return "queue_stopped";
    case EventCode::mark: return "mark";
    case EventCode::deferred_flushed: return "deferred_flushed";
    case EventCode::power_cut: return "power_cut";
    case EventCode::released: return "released";
    case EventCode::restart: return "restart";
    case EventCode::left_in_flight: return "left_in_flight";
    case EventCode::resumed: return "resumed";
    }
    return "unknown";
}

std::string op_label(uint32_t type) {
    if (type == kTypeUnknown) return std::string(ops::kInvalidName);
    if (const auto* o = ops::find(type)) return std::string(o->name);
    return fmt::format("type_{}", type);
}

const char* status_label(uint8_t s) {
    switch (s) {
    case kStatusOk: return "ok";
    case kStatusIoErr: return "ioerr";
    case kStatusUnsupp: return "unsupp";
    default: return "none";
    }
}

namespace {

template <typename T>
void put(std::vector<uint8_t>& out, const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

void pad8(std::vector<uint8_t>& out, size_t start) {
    while ((out.size() - start) % 8) out.push_back(0);
}

void finish(std::vector<uint8_t>& out, size_t start) {
    pad8(out, start);
    const uint32_t len = static_cast<uint32_t>(out.size() - start);
    std::memcpy(out.data() + start, &len, sizeof len);
}

}  // namespace

void encode(const RequestRecord& r, std::vector<uint8_t>& out) {
    uint16_t flags = r.flags & ~kReqMarker;  // a failed marker read is traced as the request it is
    uint16_t recorded = static_cast<uint16_t>(std::min<size_t>(r.seg_lens.size(), kMaxRecordedSegs));
    if (recorded < r.seg_lens.size()) flags |= kReqSegsTruncated;
    if (r.nsegs == 1 && r.seg_lens.size() == 1 && r.seg_lens[0] == r.bytes) {
        flags |= kReqOneSegment;
        recorded = 0;
    }
    // Prefix and body in one piece: on the request path, one copy.
    struct {
        RecordPrefix p;
        RequestBody b;
    } rec{};
    static_assert(sizeof rec == sizeof(RecordPrefix) + sizeof(RequestBody));
    const size_t segs_bytes = (4u * recorded + 7) / 8 * 8;
    rec.p = RecordPrefix{static_cast<uint32_t>(sizeof rec + segs_bytes), static_cast<uint16_t>(RecordKind::request), flags};
    rec.b = r;  // the fixed part as it is
    rec.b.nsegs_recorded = recorded;
    rec.b.reserved = 0;
    rec.b.flags = 0;  // in the prefix
    const size_t start = out.size();
    out.resize(start + sizeof rec + segs_bytes);
    std::memcpy(out.data() + start, &rec, sizeof rec);
    if (recorded) std::memcpy(out.data() + start + sizeof rec, r.seg_lens.data(), 4u * recorded);
    if (segs_bytes > 4u * recorded) std::memset(out.data() + start + sizeof rec + 4u * recorded, 0, segs_bytes - 4u * recorded);
}

void encode(const EventRecord& e, std::vector<uint8_t>& out) {
    const size_t start = out.size();
    put(out, RecordPrefix{0, static_cast<uint16_t>(RecordKind::event), 0});
    EventBody b{};
    b.t_ns = e.t_ns;
    b.code = static_cast<uint32_t>(e.code);
    b.queue = e.queue;
    b.head = e.head;
    b.text_len = static_cast<uint32_t>(std::min<size_t>(e.text.size(), 4096));
    put(out, b);
    out.insert(out.end(), e.text.begin(), e.text.begin() + b.text_len);
    finish(out, start);
}

void encode(const MarkerRecord& m, std::vector<uint8_t>& out) {
    const size_t start = out.size();
    put(out, RecordPrefix{0, static_cast<uint16_t>(RecordKind::marker), 0});
    put(out, MarkerBody{m.seq, m.t_ns, m.index, m.queue, m.head});
    finish(out, start);
}

void encode(const FaultRecord& f, std::vector<uint8_t>& out) {
    const size_t start = out.size();
    put(out, RecordPrefix{0, static_cast<uint16_t>(RecordKind::fault), 0});
    put(out, FaultBody{f.seq, f.rule_id, f.action, 0, f.delay_ns});
    finish(out, start);
}

const char* fault_action_name(uint16_t a) {
    return ops::action_name(a).value_or("unknown").data();  // the table's names are literals
}

void encode_dropped(uint64_t count, uint64_t t_ns, std::vector<uint8_t>& out) {
    const size_t start = out.size();
    put(out, RecordPrefix{0, static_cast<uint16_t>(RecordKind::dropped), 0});
    put(out, DroppedBody{count, t_ns});
    finish(out, start);
}

void encode_end(uint64_t t_ns, uint64_t requests, uint64_t dropped, std::vector<uint8_t>& out) {
    const size_t start = out.size();
    put(out, RecordPrefix{0, static_cast<uint16_t>(RecordKind::end), 0});
    put(out, EndBody{t_ns, requests, dropped});
    finish(out, start);
}

}  // namespace blkrig::trace
