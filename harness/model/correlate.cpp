#include "model/correlate.hpp"
#include "common/sectors.hpp"
#include "common/markers.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <unordered_map>

namespace blkrig::model {

GuestOp guest_op_of(uint32_t type) {
    switch (type) {
    case 0: return GuestOp::read;
    case 1: return GuestOp::write;
    case 4: return GuestOp::flush;
    case 11: return GuestOp::discard;
    case 14: return GuestOp::secure_erase;
    default: return GuestOp::other;  // write_zeroes, get_id, ...: "N" in the guest's rwbs
    }
}

namespace {

// What both sides agree on for one request. Flushes carry no range, nor do
// the driver's own requests (get_id: the device counts its 20-byte buffer).
struct Key {
    GuestOp op = GuestOp::none;
    uint64_t sector = 0;
    uint64_t sectors = 0;
    auto operator<=>(const Key&) const = default;
};

Key device_key(const Request& r) {
    const GuestOp op = guest_op_of(r.type);
    if (op == GuestOp::flush) return {op, 0, 0};
    if (op == GuestOp::other && r.type != 13) return {op, 0, 0};
    return {op, r.sector, r.sectors()};
}

Key guest_key(GuestOp op, uint64_t sector, uint64_t sectors) {
    if (op == GuestOp::flush) return {op, 0, 0};
    if (op == GuestOp::other && sectors == 0) return {op, 0, 0};
    return {op, sector, sectors};
}

struct KeyHash {
    size_t operator()(const Key& k) const {
        return std::hash<uint64_t>()(k.sector * 0x9e3779b97f4a7c15ull ^ (k.sectors << 8) ^ static_cast<uint64_t>(k.op));
    }
};

std::string describe(GuestOp op, uint64_t sector, uint64_t sectors) {
    return fmt::format("{} {}+{}", op_name(op), sector, sectors);
}

// Lists the first few items of a kind and counts the rest, so a run with a
// million mismatches stays readable.
class Reporter {
public:
    Reporter(std::vector<std::string>& out, std::string summary) : out_(out), summary_(std::move(summary)) {}
    // Counts one; the text is only made for the ones shown.
    template <typename F>
    void add(F&& describe) {
        if (n_++ < kShown) items_.push_back(describe());
    }
    // One entry per kind: the count on the first line, then the items.
    ~Reporter() {
        if (n_ == 0) return;
        std::string s = fmt::format(fmt::runtime(summary_), n_);
        for (auto& i : items_) s += "\n  " + i;
        if (n_ > kShown) s += fmt::format("\n  ... and {} more", n_ - kShown);
        out_.push_back(std::move(s));
    }

private:
    static constexpr uint64_t kShown = 10;
    std::vector<std::string>& out_;
    std::string summary_;
    std::vector<std::string> items_;
    uint64_t n_ = 0;
};

// "step 2", or "agent step 1" for one the run added.
std::string step_name(const Step& s) { return s.index >= 0 ? fmt::format("step {}", s.index) : fmt::format("agent step {}", s.agent_index); }

struct MarkerSeen {
    int64_t first = -1;  // first event of the marker read (block_bio_queue)
    int64_t issue = -1;  // its block_rq_issue
    int64_t last = -1;   // its block_rq_complete
};

}  // namespace

void correlate(Run& run) {
    auto& ev = run.guest.events;
    const uint64_t block_sectors = std::max<uint64_t>(run.marker_block_size / sectors::kSize, 1);
    const uint64_t region_end = run.marker_first_sector + run.marker_count * block_sectors;
    auto in_marker_region = [&](const GuestEvent& e) {
        return run.marker_first_sector && e.has_range && e.sector >= run.marker_first_sector && e.sector < region_end;
    };
    auto is_block = [](const GuestEvent& e) {
        return e.kind == GuestKind::bio_queue || e.kind == GuestKind::rq_issue || e.kind == GuestKind::rq_complete ||
               e.kind == GuestKind::getrq || e.kind == GuestKind::rq_insert || e.kind == GuestKind::bio_backmerge ||
               e.kind == GuestKind::bio_frontmerge || e.kind == GuestKind::split || e.kind == GuestKind::rq_requeue;
    };
    // A marker read: one block, read, aligned in the marker region.
    auto marker_index = [&](const GuestEvent& e) -> int64_t {
        if (!in_marker_region(e) || e.op != GuestOp::read || e.nsect != block_sectors) return -1;
        const uint64_t off = e.sector - run.marker_first_sector;
        return off % block_sectors ? -1 : static_cast<int64_t>(off / block_sectors);
    };

    // The test disk is the one the marker reads go to; without them, the
    // device with the most requests issued.
    uint16_t dev = 0;
    for (const auto& e : ev)
        if (e.kind == GuestKind::rq_issue && marker_index(e) >= 0) {
            dev = e.dev;
            break;
        }
    if (!dev) {
        std::unordered_map<uint16_t, uint64_t> n;
        for (const auto& e : ev)
            if (e.kind == GuestKind::rq_issue && e.dev) ++n[e.dev];
        uint64_t best = 0;
        for (const auto& [d, c] : n)
            if (c > best) best = c, dev = d;
    }
    run.test_dev = dev ? run.guest.name(dev) : "";

    // 1. Marker reads and segments.
    std::map<int64_t, MarkerSeen> seen;
    uint64_t other_dev = 0;
    for (size_t i = 0; i < ev.size(); ++i) {
        const auto& e = ev[i];
        if (!is_block(e)) continue;
        if (e.dev != dev) {
            if (e.kind == GuestKind::rq_issue) ++other_dev;
            continue;
        }
        const int64_t m = marker_index(e);
        if (m < 0) continue;
        auto& s = seen[m];
        if (s.first < 0) s.first = static_cast<int64_t>(i);
        if (e.kind == GuestKind::rq_issue && s.issue < 0) s.issue = static_cast<int64_t>(i);
        if (e.kind == GuestKind::rq_complete) s.last = static_cast<int64_t>(i);
    }
    if (other_dev) run.notes.push_back(fmt::format("{} guest requests on other devices than the test disk ({}) were left out", other_dev, run.test_dev));
    for (auto& st : run.steps) {
        const auto b = seen.find(markers::begin_of(st.marker_begin, st.agent_index));
        const auto e = seen.find(markers::end_of(st.marker_end, st.agent_index));
        if (b == seen.end() || e == seen.end()) continue;
        const int64_t begin = (b->second.last >= 0 ? b->second.last : std::max(b->second.issue, b->second.first)) + 1;
        const int64_t end = e->second.first;
        if (end < begin) continue;
        st.guest_begin = static_cast<size_t>(begin);
        st.guest_end = static_cast<size_t>(end);
        st.guest_bracketed = true;
    }
    const bool guest_markers = !seen.empty();
    const bool device_markers = !run.markers.empty();
    std::vector<int32_t> step_of_agent_index;
    for (size_t i = 0; i < run.steps.size(); ++i) {
        const auto a = static_cast<size_t>(run.steps[i].agent_index);
        if (step_of_agent_index.size() <= a) step_of_agent_index.resize(a + 1, -1);
        step_of_agent_index[a] = static_cast<int32_t>(i);
    }
    auto step_of_segment = [&](int32_t seg) -> int32_t {
        const int32_t m = seg - 1;
        if (m < 0 || m % 2) return -1;
        const auto a = static_cast<size_t>(m / 2);
        return a < step_of_agent_index.size() ? step_of_agent_index[a] : -1;
    };

    // 2. Bios and guest requests.
    std::vector<Bio> pieces;
    std::vector<uint32_t> pending;  // indices into pieces, oldest first
    constexpr size_t kMaxPending = 8192;  // a bio pending longer than this many others is not coming
    std::unordered_map<Key, int64_t, KeyHash> outstanding;  // issued, not yet completed
    Reporter unissued(run.findings, "{} guest bios were never part of a request the guest issued:");
    int32_t segment = 0;
    std::vector<uint32_t> take;
    for (size_t i = 0; i < ev.size(); ++i) {
        const auto& e = ev[i];
        if (e.dev != dev || !is_block(e)) continue;
        const int64_t m = marker_index(e);
        if (m >= 0) {
            if (e.kind == GuestKind::rq_issue) segment = static_cast<int32_t>(m) + 1;
            continue;
        }
        switch (e.kind) {
        case GuestKind::bio_queue: {
            if (!e.has_range || e.op == GuestOp::none) break;
            Bio b;
            b.sector = e.sector;
            b.sectors = e.nsect;
            b.event = static_cast<uint32_t>(i);
            // An empty write with a preflush is how a flush travels as a bio.
            b.op = e.op == GuestOp::write && e.preflush && e.nsect == 0 ? GuestOp::flush : e.op;
            pieces.push_back(b);
            pending.push_back(static_cast<uint32_t>(pieces.size() - 1));
            if (pending.size() > kMaxPending) {
                const auto& old = pieces[pending.front()];
                unissued.add([&] { return fmt::format("{} (guest-events.jsonl line {})", describe(old.op, old.sector, old.sectors), ev[old.event].line); });
                pending.erase(pending.begin());
            }
            break;
        }
        case GuestKind::split: {
            // The bio at `sector` now ends at new_sector; the rest is a piece of its own.
            for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
                auto& p = pieces[*it];
                if (p.sector == e.sector && e.new_sector > p.sector && e.new_sector < p.sector + p.sectors) {
                    Bio rest = p;
                    rest.sector = e.new_sector;
                    rest.sectors = p.sector + p.sectors - e.new_sector;
                    p.sectors = e.new_sector - p.sector;
                    pieces.push_back(rest);
                    pending.push_back(static_cast<uint32_t>(pieces.size() - 1));
                    break;
                }
            }
            break;
        }
        case GuestKind::bio_backmerge:
        case GuestKind::bio_frontmerge:
            for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
                auto& p = pieces[*it];
                if (p.sector == e.sector && p.sectors == e.nsect) {
                    p.merged = true;
                    break;
                }
            }
            break;
        case GuestKind::rq_issue: {
            if (!e.has_range) break;
            GuestIssue is;
            is.event = static_cast<uint32_t>(i);
            is.op = e.op;
            is.sector = e.sector;
            is.sectors = e.nsect;
            is.segment = segment;
            is.step = step_of_segment(segment);
            const Key k = guest_key(e.op, e.sector, e.nsect);
            if (outstanding[k]++ > 0) is.reissue = true;
            // Every pending bio of this operation inside the request's
            // range, the oldest for each start sector.
            take.clear();
            uint64_t covered = 0;
            const uint64_t lo = e.sector, hi = e.sector + e.nsect;
            for (size_t p = 0; p < pending.size() && (covered < e.nsect || e.nsect == 0); ++p) {
                const auto& b = pieces[pending[p]];
                if (b.op != (e.op == GuestOp::flush ? GuestOp::flush : e.op)) continue;
                if (b.sector < lo || b.sector + b.sectors > hi) continue;
                bool dup = false;
                for (auto t : take) dup = dup || pieces[pending[t]].sector == b.sector;
                if (dup) continue;
                take.push_back(static_cast<uint32_t>(p));
                covered += b.sectors;
                if (e.nsect == 0) break;
            }
            is.bios_begin = static_cast<uint32_t>(run.bios.size());
            is.bios_count = static_cast<uint32_t>(take.size());
            std::sort(take.begin(), take.end());
            for (auto t : take) run.bios.push_back(pieces[pending[t]]);
            for (auto it = take.rbegin(); it != take.rend(); ++it) pending.erase(pending.begin() + *it);
            run.issues.push_back(is);
            break;
        }
        case GuestKind::rq_complete: {
            if (!e.has_range) break;
            auto it = outstanding.find(guest_key(e.op, e.sector, e.nsect));
            if (it != outstanding.end() && --it->second <= 0) outstanding.erase(it);
            break;
        }
        default:
            break;
        }
    }
    for (auto p : pending) {
        const auto& b = pieces[p];
        unissued.add([&] { return fmt::format("{} (guest-events.jsonl line {})", describe(b.op, b.sector, b.sectors), ev[b.event].line); });
    }

    // 3. Guest requests to device requests. Device requests sorted by key,
    // then seq (so by segment within a key); entries carry what the search
    // compares so the sort and the lookups stay in one array.
    struct Entry {
        Key key;
        int32_t segment;
        uint32_t index;
    };
    std::vector<Entry> order;
    if (!run.issues.empty()) {
        order.reserve(run.requests.size());
        for (size_t i = 0; i < run.requests.size(); ++i)
            order.push_back({device_key(run.requests[i]), run.requests[i].segment, static_cast<uint32_t>(i)});
        auto less = [](const Entry& a, const Entry& b) { return a.key != b.key ? a.key < b.key : a.index < b.index; };
        if (!std::is_sorted(order.begin(), order.end(), less)) std::sort(order.begin(), order.end(), less);
    }
    // Without guest markers (lost, or none), segments mean nothing: any segment matches.
    const bool by_segment = guest_markers && device_markers;
    // The queue a guest request should arrive on: the one its issuing CPU
    // maps to (-1: unknown). Among equal candidates that one is preferred,
    // so the queue check below compares like with like.
    auto expected_queue = [&](const GuestIssue& is) -> int32_t {
        const int16_t cpu = ev[is.event].cpu;
        return cpu >= 0 && static_cast<size_t>(cpu) < run.queue_of_cpu.size() ? run.queue_of_cpu[static_cast<size_t>(cpu)] : -1;
    };
    auto find = [&](const Key& k, int32_t seg, bool any, int32_t queue) -> int64_t {
        auto lo = std::lower_bound(order.begin(), order.end(), k, [](const Entry& e, const Key& x) { return e.key < x; });
        if (!any) lo = std::lower_bound(lo, order.end(), seg, [&](const Entry& e, int32_t s) { return e.key == k && e.segment < s; });
        int64_t first = -1;
        for (auto it = lo; it != order.end() && it->key == k; ++it) {
            if (!any && it->segment != seg) break;
            if (run.requests[it->index].issue >= 0) continue;
            if (queue < 0 || run.requests[it->index].queue == queue) return it->index;
            if (first < 0) first = it->index;
        }
        return first;
    };
    auto match = [&](size_t gi, int64_t ri) {
        run.issues[gi].request = ri;
        run.requests[static_cast<size_t>(ri)].issue = static_cast<int64_t>(gi);
    };
    for (size_t gi = 0; gi < run.issues.size(); ++gi) {
        const auto& is = run.issues[gi];
        const int64_t ri = find(guest_key(is.op, is.sector, is.sectors), is.segment, !by_segment, expected_queue(is));
        if (ri >= 0) match(gi, ri);
    }
    if (by_segment) {
        for (size_t gi = 0; gi < run.issues.size(); ++gi) {
            const auto& is = run.issues[gi];
            if (is.request >= 0) continue;
            const Key k = guest_key(is.op, is.sector, is.sectors);
            int64_t ri = find(k, is.segment - 1, false, expected_queue(is));
            if (ri < 0) ri = find(k, is.segment + 1, false, expected_queue(is));
            if (ri >= 0) match(gi, ri);
        }
    }

    // 4. Queues: blk-mq puts a request on the hardware queue of the CPU it
    // was made on, and virtio_blk's queue i is virtqueue i.
    if (!run.queue_of_cpu.empty()) {
        Reporter wrong(run.findings, "{} device requests arrived on another queue than the one the guest CPU that issued them maps to:");
        for (const auto& is : run.issues) {
            const int32_t want = expected_queue(is);
            if (is.request < 0 || want < 0) continue;
            const auto& r = run.requests[static_cast<size_t>(is.request)];
            if (r.queue == want) continue;
            wrong.add([&] {
                const auto& e = ev[is.event];
                return fmt::format("seq {} {} {}+{} on queue {}, issued on guest CPU {}, which maps to queue {} (guest-events.jsonl line {})", r.seq,
                                   r.op(), r.sector, r.sectors(), r.queue, e.cpu, want, e.line);
            });
        }
    }

    // 5. What is left over.
    int32_t first_guest_segment = INT32_MAX, last_guest_segment = -1;
    for (const auto& [m, s] : seen) {
        if (s.issue < 0) continue;
        first_guest_segment = std::min(first_guest_segment, static_cast<int32_t>(m) + 1);
        last_guest_segment = std::max(last_guest_segment, static_cast<int32_t>(m) + 1);
    }
    const bool have_guest = !run.issues.empty() || guest_markers;
    {
        Reporter never_seen(run.findings, "{} requests the guest issued never reached the device:");
        Reporter requeued(run.notes, "{} guest requests were issued again before the first issue completed (requeued); the device saw each once:");
        for (const auto& is : run.issues) {
            if (is.request >= 0) continue;
            auto text = [&] {
                const auto& e = ev[is.event];
                const std::string where = is.step >= 0 ? step_name(run.steps[static_cast<size_t>(is.step)]) : "between steps";
                return fmt::format("{} {} ({}, guest-events.jsonl line {}, ts {:.6f})", e.rwbs_view(), describe(is.op, is.sector, is.sectors), where,
                                   e.line, e.ts);
            };
            if (is.reissue) requeued.add(text);
            else never_seen.add(text);
        }
    }
    {
        Reporter unasked(run.findings, "{} device requests match no request the guest issued:");
        Reporter before(run.notes, "{} device requests came before the guest trace's first marker (firmware, partition scan: not traced):");
        Reporter after(run.notes, "{} device requests came after the guest trace's last marker (the agent stops tracing after the last step):");
        Reporter untraced(run.notes, "{} device requests and no guest trace to match them with:");
        for (const auto& r : run.requests) {
            if (r.issue >= 0) continue;
            auto text = [&] {
                return fmt::format("seq {} {} {}+{}{}", r.seq, r.op(), r.sector, r.sectors(),
                                   r.step >= 0 ? fmt::format(" ({})", step_name(run.steps[static_cast<size_t>(r.step)])) : "");
            };
            if (!have_guest) untraced.add(text);
            else if (by_segment && r.segment < first_guest_segment) before.add(text);
            else if (by_segment && r.segment >= last_guest_segment) after.add(text);
            else unasked.add(text);
        }
    }
}

}  // namespace blkrig::model
