// blkparse text, trace-event JSON and CSV from a device trace.
#include "export/export.hpp"
#include "common/sectors.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <tuple>
#include <vector>

namespace blkrig::exporter {

namespace {

using Faults = std::map<uint64_t, const trace::FaultRecord*>;

// At most one rule fires on a request, so one fault record per seq.
Faults faults_by_seq(const trace::Trace& t) {
    Faults f;
    for (const auto& r : t.faults) f[r.seq] = &r;
    return f;
}

// Times are shown from the trace's start; a record stamped before it (it
// cannot be, but a damaged file can say so) shows as 0.
uint64_t since_start(const trace::Trace& t, uint64_t ns) { return ns - std::min(t.header.t_start_ns, ns); }

uint64_t latency(const trace::RequestRecord& r) { return r.t_complete_ns - std::min(r.t_submit_ns, r.t_complete_ns); }

std::vector<const trace::RequestRecord*> by_seq(const trace::Trace& t) {
    std::vector<const trace::RequestRecord*> v;
    v.reserve(t.requests.size());
    for (const auto& r : t.requests) v.push_back(&r);
    std::sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->seq < b->seq; });
    return v;
}

bool queue_scoped(trace::EventCode c) {
    using E = trace::EventCode;
    return c == E::queue_broken || c == E::queue_started || c == E::queue_stopped || c == E::deferred_flushed;
}

std::string event_text(const trace::EventRecord& e) {
    return e.text.empty() ? std::string(trace::event_name(e.code)) : fmt::format("{}: {}", trace::event_name(e.code), e.text);
}

std::string fault_text(const trace::FaultRecord& f) {
    std::string s = fmt::format("fault rule {} {} seq {}", f.rule_id, trace::fault_action_name(f.action), f.seq);
    if (f.delay_ns) s += fmt::format(" delay {} ns", f.delay_ns);
    return s;
}

}  // namespace

std::optional<Format> parse_format(std::string_view name) {
    if (name == "blkparse") return Format::blkparse;
    if (name == "perfetto") return Format::perfetto;
    if (name == "csv") return Format::csv;
    return std::nullopt;
}

std::optional<Options> parse_device(std::string_view s) {
    const auto comma = s.find(',');
    if (comma == std::string_view::npos) return std::nullopt;
    Options o;
    auto number = [](std::string_view p, uint32_t& out) {
        const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), out);
        return !p.empty() && ec == std::errc{} && end == p.data() + p.size();
    };
    if (!number(s.substr(0, comma), o.major) || !number(s.substr(comma + 1), o.minor)) return std::nullopt;
    return o;
}

std::string rwbs(uint32_t type) {
    switch (type) {
    case 0: return "R";
    case 1: return "W";
    case 4: return "F";
    case 11: return "D";
    case 13: return "WZ";
    case 14: return "DE";
    default: return "N";
    }
}

int blk_error(uint8_t status) {
    switch (status) {
    case trace::kStatusOk: return 0;
    case trace::kStatusUnsupp: return -95;  // BLK_STS_NOTSUPP
    default: return -5;                     // IOERR, and no status at all: virtio_blk's BLK_STS_IOERR
    }
}

std::string to_blkparse(const trace::Trace& t, const Options& o) {
    struct Line {
        uint64_t t;
        uint64_t seq;  // orders lines of the same instant: arrival order, then
        int rank;      // Q, D, fault, C of one request
        std::string text;
    };
    std::vector<Line> lines;
    lines.reserve(t.requests.size() * 3 + t.markers.size() + t.events.size());
    // blkparse's header: "%D %2c %8s %5T.%9t %5p %2a %3d ". The device knows no
    // guest process, so pid is 0 and messages have sequence 0 as in blkparse.
    auto header = [&](unsigned cpu, uint64_t seq, uint64_t ns, std::string_view act, std::string_view rwbs) {
        return fmt::format("{:>3},{:<3} {:>2} {:>8} {:>5}.{:09} {:>5} {:>2} {:>3} ", o.major, o.minor, cpu, seq, ns / 1'000'000'000,
                           ns % 1'000'000'000, 0, act, rwbs);
    };
    auto message = [&](unsigned cpu, uint64_t ns, uint64_t order, int rank, const std::string& text) {
        lines.push_back({ns, order, rank, header(cpu, 0, ns, "m", "N") + text});
    };
    const auto faults = faults_by_seq(t);
    for (const auto& r : t.requests) {
        const std::string rw = rwbs(r.type);
        const uint64_t sectors = sectors::covering(r.bytes);
        const uint64_t sub = since_start(t, r.t_submit_ns), done = std::max(sub, since_start(t, r.t_complete_ns));
        const std::string what = sectors ? fmt::format("{} + {} ", r.sector, sectors) : std::string();
        for (const char* act : {"Q", "D"})
            lines.push_back({sub, r.seq, act[0] == 'Q' ? 0 : 1, header(r.queue, r.seq, sub, act, rw) + what + "[guest]"});
        if (auto f = faults.find(r.seq); f != faults.end()) message(r.queue, sub, r.seq, 2, fault_text(*f->second));
        lines.push_back({done, r.seq, 3,
                         header(r.queue, r.seq, done, "C", rw) + (sectors ? what : fmt::format("{} ", r.sector)) +
                             fmt::format("[{}]", blk_error(r.status))});
    }
    for (const auto& m : t.markers) message(m.queue, since_start(t, m.t_ns), m.seq, 0, fmt::format("marker {} seq {}", m.index, m.seq));
    // Events and dropped records carry no seq: after the requests of the same instant.
    for (const auto& e : t.events) message(e.queue, since_start(t, e.t_ns), UINT64_MAX, 4, event_text(e));
    for (const auto& d : t.dropped) message(0, since_start(t, d.t_ns), UINT64_MAX, 4, fmt::format("dropped {} records", d.count));
    std::stable_sort(lines.begin(), lines.end(),
                     [](const Line& a, const Line& b) { return std::tie(a.t, a.seq, a.rank) < std::tie(b.t, b.seq, b.rank); });
    std::string out;
    for (const auto& l : lines) {
        out += l.text;
        out += '\n';
    }
    return out;
}

namespace {

// The document in pieces, so write() can stream it event by event instead of
// holding a second, serialized copy of a large trace.
struct PerfettoParts {
    std::vector<nlohmann::json> events;  // metadata first, then by time
    nlohmann::json other;
};

PerfettoParts perfetto_parts(const trace::Trace& t) {
    using nlohmann::json;
    constexpr int kPid = 1;
    // Requests of one queue overlap whenever it has more than one in flight,
    // and the trace-event format forbids overlapping slices on one thread
    // that do not nest. So a queue's slices are spread over lanes: lane 0 is
    // tid = queue, lane k tid = queue + k * 65536 ("queue N lane k").
    constexpr uint64_t kLaneStride = 65536;
    auto us = [&](uint64_t ns) { return static_cast<double>(since_start(t, ns)) / 1000.0; };
    const auto faults = faults_by_seq(t);

    auto reqs = by_seq(t);
    std::stable_sort(reqs.begin(), reqs.end(), [](auto* a, auto* b) { return a->t_submit_ns < b->t_submit_ns; });
    std::map<uint16_t, std::vector<uint64_t>> lane_end;  // by queue: when each lane's last slice ends
    for (uint32_t q = 0; q < t.header.num_queues && q <= UINT16_MAX; ++q) lane_end[static_cast<uint16_t>(q)];
    // Sorted by time once built; the key is kept beside each event so the
    // sort does not look into the JSON.
    std::vector<std::pair<uint64_t, json>> events;
    events.reserve(t.requests.size() + t.faults.size() + t.markers.size() + t.events.size() + t.dropped.size());
    auto add = [&](uint64_t ns, json e) { events.emplace_back(since_start(t, ns), std::move(e)); };
    for (const auto* r : reqs) {
        auto& lanes = lane_end[r->queue];
        const uint64_t end = std::max(r->t_submit_ns, r->t_complete_ns);
        size_t lane = 0;
        while (lane < lanes.size() && lanes[lane] > r->t_submit_ns) ++lane;
        if (lane == lanes.size()) lanes.push_back(0);
        lanes[lane] = end;
        json args = {{"seq", r->seq},           {"queue", r->queue},  {"op", trace::op_label(r->type)},
                     {"sector", r->sector},     {"sectors", sectors::covering(r->bytes)}, {"bytes", r->bytes},
                     {"status", trace::status_label(r->status)}, {"nsegs", r->nsegs}, {"seg_lens", r->seg_lens},
                     {"head", r->head},         {"latency_ns", latency(*r)}};
        if (r->flags & trace::kReqMalformed) args["malformed"] = true;
        if (r->flags & trace::kReqSegsTruncated) args["seg_lens_truncated"] = true;
        if (auto f = faults.find(r->seq); f != faults.end()) {
            args["fault_rule"] = f->second->rule_id;
            args["fault_action"] = trace::fault_action_name(f->second->action);
            if (f->second->delay_ns) args["fault_delay_ns"] = f->second->delay_ns;
            add(r->t_submit_ns, {{"name", fmt::format("fault {}", trace::fault_action_name(f->second->action))},
                              {"cat", "fault"},
                              {"ph", "i"},
                              {"s", "t"},
                              {"ts", us(r->t_submit_ns)},
                              {"pid", kPid},
                              {"tid", r->queue},
                              {"args", {{"seq", r->seq}, {"rule", f->second->rule_id}, {"action", trace::fault_action_name(f->second->action)},
                                        {"delay_ns", f->second->delay_ns}}}});
        }
        add(r->t_submit_ns, {{"name", trace::op_label(r->type)},
                          {"cat", "request"},
                          {"ph", "X"},
                          {"ts", us(r->t_submit_ns)},
                          {"dur", static_cast<double>(latency(*r)) / 1000.0},
                          {"pid", kPid},
                          {"tid", r->queue + lane * kLaneStride},
                          {"args", std::move(args)}});
    }
    for (const auto& m : t.markers)
        add(m.t_ns, {{"name", fmt::format("marker {}", m.index)}, {"cat", "marker"}, {"ph", "i"}, {"s", "t"}, {"ts", us(m.t_ns)},
                          {"pid", kPid}, {"tid", m.queue}, {"args", {{"seq", m.seq}, {"index", m.index}, {"head", m.head}}}});
    for (const auto& e : t.events) {
        const bool on_queue = queue_scoped(e.code);
        add(e.t_ns, {{"name", event_text(e)}, {"cat", "event"}, {"ph", "i"}, {"s", on_queue ? "t" : "g"}, {"ts", us(e.t_ns)},
                          {"pid", kPid}, {"tid", on_queue ? e.queue : 0},
                          {"args", {{"event", trace::event_name(e.code)}, {"queue", e.queue}, {"head", e.head}, {"text", e.text}}}});
    }
    for (const auto& d : t.dropped)
        add(d.t_ns, {{"name", fmt::format("dropped {} records", d.count)}, {"cat", "dropped"}, {"ph", "i"}, {"s", "g"},
                          {"ts", us(d.t_ns)}, {"pid", kPid}, {"tid", 0}, {"args", {{"count", d.count}}}});
    std::stable_sort(events.begin(), events.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

    std::vector<json> out;
    out.reserve(events.size() + 1 + 2 * lane_end.size());
    out.push_back({{"name", "process_name"}, {"ph", "M"}, {"ts", 0}, {"pid", kPid}, {"tid", 0}, {"args", {{"name", "blkrig-device"}}}});
    for (const auto& [q, lanes] : lane_end)
        for (size_t lane = 0; lane < std::max<size_t>(1, lanes.size()); ++lane) {
            const uint64_t tid = q + lane * kLaneStride;
            const std::string name = lane ? fmt::format("queue {} lane {}", q, lane) : fmt::format("queue {}", q);
            out.push_back({{"name", "thread_name"}, {"ph", "M"}, {"ts", 0}, {"pid", kPid}, {"tid", tid}, {"args", {{"name", name}}}});
            out.push_back({{"name", "thread_sort_index"}, {"ph", "M"}, {"ts", 0}, {"pid", kPid}, {"tid", tid},
                           {"args", {{"sort_index", q * kLaneStride + lane}}}});
        }
    for (auto& e : events) out.push_back(std::move(e.second));
    return {std::move(out),
            {{"source", "blkrig-device trace"},
             {"num_queues", t.header.num_queues},
             {"capacity_sectors", t.header.capacity_sectors},
             {"logical_block_size", t.header.logical_block_size},
             {"requests", t.requests.size()},
             {"complete", t.complete()},
             {"incomplete_reason", t.incompleteness()}}};
}

// One event per line: the file stays greppable and diffable.
void write_perfetto(std::ostream& out, const trace::Trace& t) {
    auto parts = perfetto_parts(t);
    out << "{\"traceEvents\":[";
    const char* sep = "\n";
    for (auto& e : parts.events) {
        out << sep << e.dump();
        e = nullptr;  // done with it
        sep = ",\n";
    }
    out << "\n],\"displayTimeUnit\":\"ns\",\"otherData\":" << parts.other.dump() << "}\n";
}

}  // namespace

nlohmann::json to_perfetto(const trace::Trace& t) {
    auto parts = perfetto_parts(t);
    return {{"traceEvents", std::move(parts.events)}, {"displayTimeUnit", "ns"}, {"otherData", std::move(parts.other)}};
}

std::string to_csv(const trace::Trace& t) {
    // No field can hold a comma, a quote or a newline (numbers and fixed
    // labels; seg_lens are space-separated), so nothing needs quoting.
    std::string out =
        "seq,queue,head,op,sector,sectors,bytes,nsegs,seg_lens,t_submit_ns,t_complete_ns,latency_ns,status,malformed,fault_rule,fault_action,"
        "fault_delay_ns\n";
    const auto faults = faults_by_seq(t);
    for (const auto* r : by_seq(t)) {
        out += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},", r->seq, r->queue, r->head, trace::op_label(r->type), r->sector,
                           sectors::covering(r->bytes), r->bytes, r->nsegs, fmt::join(r->seg_lens, " "), since_start(t, r->t_submit_ns),
                           since_start(t, r->t_complete_ns), latency(*r), trace::status_label(r->status),
                           (r->flags & trace::kReqMalformed) ? 1 : 0);
        if (auto f = faults.find(r->seq); f != faults.end())
            out += fmt::format("{},{},{}\n", f->second->rule_id, trace::fault_action_name(f->second->action), f->second->delay_ns);
        else out += ",,\n";
    }
    return out;
}

void write(std::ostream& out, const trace::Trace& t, Format f, const Options& o) {
    switch (f) {
    case Format::blkparse: out << to_blkparse(t, o); break;
    case Format::perfetto: write_perfetto(out, t); break;
    case Format::csv: out << to_csv(t); break;
    }
}

}  // namespace blkrig::exporter
