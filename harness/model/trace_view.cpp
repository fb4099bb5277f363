#include "model/trace_view.hpp"
#include "common/sectors.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace blkrig::model {

nlohmann::json to_json(const trace::RequestRecord& r) {
    nlohmann::json j = {{"kind", "request"},
                        {"seq", r.seq},
                        {"queue", r.queue},
                        {"op", trace::op_label(r.type)},
                        {"sector", r.sector},
                        {"bytes", r.bytes},
                        {"nsegs", r.nsegs},
                        {"seg_lens", r.seg_lens},
                        {"status", trace::status_label(r.status)},
                        {"t_submit_ns", r.t_submit_ns},
                        {"t_complete_ns", r.t_complete_ns},
                        {"head", r.head}};
    if (r.flags & trace::kReqMalformed) j["malformed"] = true;
    if (r.flags & trace::kReqSegsTruncated) j["seg_lens_truncated"] = true;
    if (r.flags & trace::kReqResubmitted) j["resubmitted"] = true;
    if (r.flags & trace::kReqUnfinished) j["unfinished"] = true;
    return j;
}

nlohmann::json to_json(const trace::EventRecord& e) {
    return {{"kind", "event"}, {"event", trace::event_name(e.code)}, {"t_ns", e.t_ns}, {"queue", e.queue}, {"head", e.head}, {"text", e.text}};
}

std::string to_text(const trace::RequestRecord& r, uint64_t t0) {
    const double at_ms = static_cast<double>(r.t_submit_ns - std::min(t0, r.t_submit_ns)) / 1e6;
    const double lat_us = static_cast<double>(r.t_complete_ns - std::min(r.t_submit_ns, r.t_complete_ns)) / 1e3;
    return fmt::format("{:>8} q{} {:>12.3f}ms {:<12} {:>10}+{:<6} {:>8}B {:>3}seg {:<6} {:>9.1f}us{}{}", r.seq, r.queue, at_ms,
                       trace::op_label(r.type), r.sector, sectors::covering(r.bytes), r.bytes, r.nsegs, trace::status_label(r.status), lat_us,
                       (r.flags & trace::kReqMalformed) ? " malformed" : "", (r.flags & trace::kReqUnfinished) ? " unfinished" : "");
}

Summary summarize(const trace::Trace& t) {
    Summary s;
    std::vector<uint64_t> lat;
    lat.reserve(t.requests.size());
    uint64_t first = UINT64_MAX, last = 0;
    for (const auto& r : t.requests) {
        auto& o = s.ops[trace::op_label(r.type)];
        ++o.count;
        // Refused requests may claim any size: the total stops at the largest value, never wraps.
        o.bytes = r.bytes > UINT64_MAX - o.bytes ? UINT64_MAX : o.bytes + r.bytes;
        o.min_bytes = std::min(o.min_bytes, r.bytes);
        o.max_bytes = std::max(o.max_bytes, r.bytes);
        if (r.flags & trace::kReqResubmitted) ++s.resubmitted;
        if (r.flags & trace::kReqUnfinished) {
            // Never answered: neither an error nor a latency.
            ++s.unfinished;
            first = std::min(first, r.t_submit_ns);
            continue;
        }
        if (r.status != trace::kStatusOk) ++o.errors;
        if (r.flags & trace::kReqMalformed) ++s.malformed;
        lat.push_back(r.t_complete_ns - std::min(r.t_submit_ns, r.t_complete_ns));
        first = std::min(first, r.t_submit_ns);
        last = std::max(last, r.t_complete_ns);
    }
    s.requests = t.requests.size();
    s.events = t.events.size();
    s.markers = t.markers.size();
    for (const auto& f : t.faults) ++(f.action == trace::kFaultPowerOff ? s.powered_off : s.faults);
    if (!lat.empty()) {
        std::sort(lat.begin(), lat.end());
        s.latency_p50_ns = lat[lat.size() / 2];
        s.latency_p99_ns = lat[std::min(lat.size() - 1, lat.size() * 99 / 100)];
        s.latency_max_ns = lat.back();
        s.span_ns = last - first;
    }
    s.incomplete = t.incompleteness();
    for (const auto& e : t.events) s.restarts += e.code == trace::EventCode::restart;
    account_seqs(t, s);
    s.bad_records = t.bad.size();
    if (!t.bad.empty()) s.first_bad = t.bad.front().describe();
    return s;
}

void account_seqs(const trace::Trace& t, Summary& s) {
    constexpr size_t kShown = 5;
    // Seqs are dense from 0, so a count per seq does in one pass what sorting
    // a million (seq, unfinished) pairs did; a sparse trace (bad records can
    // name any seq) takes the sort.
    uint64_t max_seq = 0;
    for (const auto& r : t.requests) max_seq = std::max(max_seq, r.seq);
    for (const auto& m : t.markers) max_seq = std::max(max_seq, m.seq);
    const size_t n = t.requests.size() + t.markers.size();
    if (n == 0) return;
    auto missing = [&](uint64_t from, uint64_t to) {  // [from, to) has no record
        s.seq_missing_count += to - from;
        for (uint64_t q = from; q < to && s.seq_missing.size() < kShown; ++q) s.seq_missing.push_back(q);
    };
    if (max_seq <= 2 * n + 1024) {
        // completed[q]: records of q that completed; seen[q]: any record of q.
        std::vector<uint32_t> completed(max_seq + 1, 0);
        std::vector<uint8_t> seen(max_seq + 1, 0);
        for (const auto& r : t.requests) {
            seen[r.seq] = 1;
            if (!(r.flags & trace::kReqUnfinished)) ++completed[r.seq];
        }
        for (const auto& m : t.markers) seen[m.seq] = 1, ++completed[m.seq];
        uint64_t gap = 0;
        for (uint64_t q = 0; q <= max_seq; ++q) {
            if (!seen[q]) continue;
            if (q > gap) missing(gap, q);
            gap = q + 1;
            // The first record of a seq is its own; each further completed one is a duplicate.
            for (uint32_t k = 1; k < completed[q]; ++k)
                if (s.seq_duplicate_count++ < kShown) s.seq_duplicates.push_back(q);
        }
        return;
    }
    // (seq, unfinished): an unfinished record sorts after a completed one of its seq.
    std::vector<std::pair<uint64_t, bool>> seqs;
    seqs.reserve(n);
    for (const auto& r : t.requests) seqs.emplace_back(r.seq, (r.flags & trace::kReqUnfinished) != 0);
    for (const auto& m : t.markers) seqs.emplace_back(m.seq, false);
    std::sort(seqs.begin(), seqs.end());
    uint64_t expect = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
        if (i > 0 && seqs[i].first == seqs[i - 1].first) {
            if (!seqs[i].second && s.seq_duplicate_count++ < kShown) s.seq_duplicates.push_back(seqs[i].first);
            continue;
        }
        // A bad record's seq can be huge: count the gap, list only its start.
        if (seqs[i].first > expect) missing(expect, seqs[i].first);
        expect = seqs[i].first + 1;
    }
}

nlohmann::json to_json(const Summary& s) {
    nlohmann::json ops = nlohmann::json::object();
    for (const auto& [name, o] : s.ops)
        ops[name] = {{"count", o.count}, {"bytes", o.bytes}, {"errors", o.errors}, {"min_bytes", o.min_bytes}, {"max_bytes", o.max_bytes}};
    return {{"requests", s.requests},   {"malformed", s.malformed},          {"events", s.events}, {"markers", s.markers}, {"faults", s.faults}, {"powered_off", s.powered_off},
            {"ops", ops},               {"latency_p50_ns", s.latency_p50_ns}, {"latency_p99_ns", s.latency_p99_ns},
            {"latency_max_ns", s.latency_max_ns}, {"span_ns", s.span_ns},    {"complete", s.incomplete.empty()},
            {"incomplete_reason", s.incomplete}, {"restarts", s.restarts}, {"resubmitted", s.resubmitted}, {"unfinished", s.unfinished},
            {"seq_duplicates", s.seq_duplicate_count}, {"seq_missing", s.seq_missing_count},
            {"bad_records", s.bad_records}, {"first_bad_record", s.first_bad}};
}

std::string to_text(const Summary& s) {
    std::string out = fmt::format("{} requests in {:.1f} ms (latency p50 {:.1f} us, p99 {:.1f} us, max {:.1f} us)\n", s.requests,
                                  static_cast<double>(s.span_ns) / 1e6, static_cast<double>(s.latency_p50_ns) / 1e3,
                                  static_cast<double>(s.latency_p99_ns) / 1e3, static_cast<double>(s.latency_max_ns) / 1e3);
    for (const auto& [name, o] : s.ops)
        out += fmt::format("  {:<13} {:>7} requests {:>12} bytes  sizes {}..{}  errors {}\n", name, o.count, o.bytes,
                           o.count ? o.min_bytes : 0, o.max_bytes, o.errors);
    if (s.markers) out += fmt::format("  {} markers\n", s.markers);
    if (s.faults) out += fmt::format("  {} requests hit by fault rules\n", s.faults);
    if (s.powered_off) out += fmt::format("  {} requests failed while the power was cut\n", s.powered_off);
    if (s.malformed) out += fmt::format("  {} malformed requests (answered IOERR or nothing)\n", s.malformed);
    if (s.restarts || s.resubmitted)
        out += fmt::format("  {} device restart(s); {} request(s) resubmitted from the inflight region, each under its first seq\n", s.restarts,
                           s.resubmitted);
    if (s.unfinished)
        out += fmt::format("  {} request(s) left in flight, never completed, when the device ended (status none)\n", s.unfinished);
    if (s.seq_duplicate_count)
        out += fmt::format("  {} seq(s) completed more than once, e.g. {}\n", s.seq_duplicate_count, fmt::join(s.seq_duplicates, ", "));
    if (s.seq_missing_count)
        out += fmt::format("  {} seq(s) never completed, e.g. {}\n", s.seq_missing_count, fmt::join(s.seq_missing, ", "));
    if (s.bad_records) out += fmt::format("  {} IMPOSSIBLE RECORDS left out, the first: {}\n", s.bad_records, s.first_bad);
    out += s.incomplete.empty() ? "  trace complete\n" : fmt::format("  TRACE INCOMPLETE: {}\n", s.incomplete);
    return out;
}

}  // namespace blkrig::model
