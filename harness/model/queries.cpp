#include "model/queries.hpp"
#include "common/sectors.hpp"

#include "common/ops.hpp"

#include "trace/format.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace blkrig::model {

const Step& step_or_throw(const Run& run, int index) {
    if (const Step* s = run.step(index)) return *s;
    int hi = -1;
    for (const auto& s : run.steps) hi = std::max(hi, s.index);
    throw QueryError(hi < 0 ? fmt::format("step {}: the run has no steps", index)
                            : fmt::format("step {}: the run's steps are 0..{}", index, hi));
}

int file_or_throw(const Run& run, const std::string& path) {
    const int i = run.file_index(path);
    if (i >= 0) return i;
    std::string known;
    for (const auto& f : run.files) known += (known.empty() ? "" : ", ") + f.guest_path;
    throw QueryError(fmt::format("file '{}' is not in the image's extents.json (files: {})", path, known.empty() ? "none" : known));
}

void check_op(const std::string& op) {
    if (ops::find(op) || op == ops::kInvalidName || op == "data") return;
    // Other types as the trace labels them: "type_N".
    if (op.size() > 5 && op.size() < 15 && op.rfind("type_", 0) == 0 && op.find_first_not_of("0123456789", 5) == std::string::npos) return;
    std::string known;
    for (const auto& o : ops::kOps) known += std::string(o.name) + ", ";
    throw QueryError(fmt::format("op '{}' is not one of {}{}, data", op, known, ops::kInvalidName));
}

namespace {
// The op filter as a test on the type code: labels are compared once, not per request.
struct OpTest {
    enum { any, data, type } kind = any;
    uint32_t code = 0;
    bool operator()(const Request& r) const { return kind == any || (kind == data ? r.is_data() : r.type == code); }
};
OpTest op_test(const std::optional<std::string>& op) {
    if (!op) return {};
    if (*op == "data") return {OpTest::data, 0};
    if (*op == "invalid") return {OpTest::type, trace::kTypeUnknown};
    for (uint32_t t = 0; t < 64; ++t)
        if (trace::op_label(t) == *op) return {OpTest::type, t};
    return {OpTest::type, static_cast<uint32_t>(std::stoul(op->substr(5)))};  // "type_N" (check_op let it through)
}
}  // namespace

std::vector<const Request*> requests(const Run& run, const Filter& f) {
    if (f.op) check_op(*f.op);
    const OpTest op_matches = op_test(f.op);
    size_t b = 0, e = run.requests.size();
    if (f.step) {
        const Step& s = step_or_throw(run, *f.step);
        b = s.req_begin;
        e = s.req_end;
    }
    std::vector<const Request*> out;
    out.reserve(e - b);
    for (size_t i = b; i < e; ++i)
        if (op_matches(run.requests[i])) out.push_back(&run.requests[i]);
    return out;
}

std::vector<FileHit> file_hits(const Run& run, int file, const std::vector<const Request*>& reqs) {
    std::vector<FileHit> out;
    const auto& x = run.extent_index;
    auto hint = x.begin();  // sequential I/O: the next request usually starts in the same index entry or the next
    for (const Request* r : reqs) {
        if (!r->is_data() || r->bytes == 0) continue;
        // Index entries overlapping [sector, end): start at the last one beginning at or before sector.
        auto it = hint;
        if (!(it != x.end() && it->sector <= r->sector && (std::next(it) == x.end() || std::next(it)->sector > r->sector))) {
            it = std::upper_bound(x.begin(), x.end(), r->sector, [](uint64_t s, const ExtentIndexEntry& e) { return s < e.sector; });
            if (it != x.begin()) --it;
        }
        hint = it;
        FileHit h;
        h.request = r;
        uint32_t extents_touched = 0;
        for (; it != x.end() && it->sector < r->end_sector(); ++it) {
            if (it->file != static_cast<uint32_t>(file) || it->sector + it->sectors <= r->sector) continue;
            const uint64_t a = std::max(r->sector, it->sector), b = std::min(r->end_sector(), it->sector + it->sectors);
            const uint64_t off = it->file_offset + sectors::to_bytes(a - it->sector);
            if (!extents_touched || off < h.file_offset) {
                h.file_offset = off;
                h.extent = it->extent;
            }
            h.file_bytes += sectors::to_bytes(b - a);
            ++extents_touched;
        }
        if (!extents_touched) continue;
        h.crosses_extent = extents_touched > 1;
        out.push_back(h);
    }
    return out;
}

std::vector<FileHit> file_requests(const Run& run, int file, const Filter& f) { return file_hits(run, file, requests(run, f)); }

std::optional<uint64_t> sector_of(const File& file, uint64_t offset) {
    for (const auto& e : file.extents)
        if (offset >= e.file_offset && offset < e.file_offset + sectors::to_bytes(e.sectors)) return e.sector + sectors::of_offset(offset - e.file_offset);
    return std::nullopt;
}

const Request* request_at(const Run& run, int file, uint64_t offset, const Filter& f) {
    const auto sector = sector_of(run.files[static_cast<size_t>(file)], offset);
    if (!sector) return nullptr;
    for (const Request* r : requests(run, f))
        if (r->is_data() && r->sector <= *sector && *sector < r->end_sector()) return r;
    return nullptr;
}

std::vector<std::vector<uint64_t>> contiguous_runs(const std::vector<const Request*>& reqs) {
    std::vector<std::vector<uint64_t>> out;
    const Request* prev = nullptr;
    for (const Request* r : reqs) {
        if (!r->is_data()) continue;
        if (!prev || r->sector != prev->end_sector()) out.emplace_back();
        out.back().push_back(r->seq);
        prev = r;
    }
    return out;
}

std::vector<std::vector<uint64_t>> ascending_runs(const std::vector<const Request*>& reqs) {
    std::vector<std::vector<uint64_t>> out;
    const Request* prev = nullptr;
    for (const Request* r : reqs) {
        if (!r->is_data()) continue;
        if (!prev || r->sector < prev->end_sector()) out.emplace_back();
        out.back().push_back(r->seq);
        prev = r;
    }
    return out;
}

uint64_t backward_seeks(const std::vector<const Request*>& reqs) {
    const auto runs = ascending_runs(reqs);
    return runs.empty() ? 0 : runs.size() - 1;
}

std::map<uint64_t, uint64_t> size_histogram(const std::vector<const Request*>& reqs) {
    std::map<uint64_t, uint64_t> h;
    for (const Request* r : reqs) ++h[r->bytes];
    return h;
}

std::map<uint64_t, uint64_t> segment_histogram(const std::vector<const Request*>& reqs) {
    std::map<uint64_t, uint64_t> h;
    for (const Request* r : reqs) ++h[r->nsegs];
    return h;
}

uint32_t bio_count(const Run& run, const Request& r) {
    return r.issue < 0 ? 0 : run.issues[static_cast<size_t>(r.issue)].bios_count;
}

std::string guest_rwbs(const Run& run, const Request& r) {
    if (r.issue < 0) return "";
    return std::string(run.guest.events[run.issues[static_cast<size_t>(r.issue)].event].rwbs_view());
}

double merge_ratio(const Run& run, const std::vector<const Request*>& reqs) {
    uint64_t matched = 0, bios = 0;
    for (const Request* r : reqs) {
        if (r->issue < 0) continue;
        ++matched;
        bios += bio_count(run, *r);
    }
    return matched ? static_cast<double>(bios) / static_cast<double>(matched) : 0.0;
}

std::vector<const Request*> fault_hits(const std::vector<const Request*>& reqs) {
    std::vector<const Request*> out;
    for (const Request* r : reqs)
        if (r->fault_action) out.push_back(r);  // a rule's, or the powered-off device's (rule 0)
    return out;
}

std::set<std::string> functions_hit(const Run& run, std::optional<int> step) {
    size_t b = 0, e = run.guest.events.size();
    if (step) {
        const Step& s = step_or_throw(run, *step);
        if (!s.guest_bracketed) return {};
        b = s.guest_begin;
        e = s.guest_end;
    }
    std::vector<bool> seen(run.guest.names.size());
    std::set<std::string> out;
    for (size_t i = b; i < e; ++i) {
        const auto& ev = run.guest.events[i];
        if (ev.kind != GuestKind::function || seen[ev.name]) continue;
        seen[ev.name] = true;
        out.insert(run.guest.name(ev.name));
    }
    return out;
}

std::string step_label(const Step& s) {
    std::string out = s.index >= 0 ? fmt::format("step {} {}", s.index, s.op) : fmt::format("added step (agent {}) {}", s.agent_index, s.op);
    if (!s.path.empty()) out += " " + s.path;
    else if (s.args.contains("fd")) out += " fd " + s.args.value("fd", std::string());
    return out;
}

}  // namespace blkrig::model
