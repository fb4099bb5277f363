#include "checks/expect.hpp"
#include "common/sectors.hpp"
#include "common/markers.hpp"

#include "model/queries.hpp"
#include "trace/format.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

namespace blkrig::checks {

using nlohmann::json;

namespace {

constexpr uint64_t kPage = 4096;

enum class Kind { boolean, count, positive, number, string, strings };
enum class Needs { none, file, step };  // the selector a property cannot do without

struct Selection;
struct Outcome;
using CheckFn = Outcome (*)(const Selection&, const nlohmann::json& value, const std::string& key);

struct Spec {
    const char* key;
    Kind kind;
    Needs needs;
    bool shape;  // about each request's size, place or order: fails over no requests
    CheckFn check;
    std::vector<std::string> one_of = {};  // a string's allowed values (empty: any)
};

const std::vector<Spec>& specs();  // the table, after the checks

const Spec* find_spec(const std::string& key) {
    for (const auto& s : specs())
        if (key == s.key) return &s;
    return nullptr;
}

const std::set<std::string> kSelectors = {"step", "file", "op", "name"};

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
    return out;
}

}  // namespace

const std::vector<std::string>& property_keys() {
    static const std::vector<std::string> keys = [] {
        std::vector<std::string> k;
        for (const auto& s : specs()) k.push_back(s.key);
        return k;
    }();
    return keys;
}

Expectation parse_expectation(const json& table, const std::string& where, const std::string& file, const std::map<std::string, int>& key_lines) {
    if (!table.is_object()) throw ExpectError(fmt::format("{}: an expectation is a table of keys", where));
    Expectation e;
    e.where = where;
    auto at = [&](const std::string& key) {
        auto it = key_lines.find(key);
        return it == key_lines.end() || file.empty() ? where : fmt::format("{}:{}", file, it->second);
    };
    auto bad = [&](const std::string& key, const std::string& what) { return ExpectError(fmt::format("{}: expect.{}: {}", at(key), key, what)); };
    // Named copies, not a structured binding: clang 14 (the fuzz build) cannot capture those in lambdas.
    for (const auto& item : table.items()) {
        const std::string& key = item.key();
        const auto& v = item.value();
        if (key == "step") {
            // Above INT_MAX it would wrap to another step's index.
            if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT_MAX)
                throw bad(key, "must be a step index (an integer from 0)");
            e.step = static_cast<int>(v.get<int64_t>());
            e.step_where = at(key);
        } else if (key == "file") {
            if (!v.is_string() || v.get<std::string>().empty()) throw bad(key, "must be a file path, e.g. \"/mnt/f1.bin\"");
            e.file = v.get<std::string>();
            e.file_where = at(key);
        } else if (key == "op") {
            if (!v.is_string()) throw bad(key, "must be an operation name, e.g. \"read\"");
            try {
                model::check_op(v.get<std::string>());
            } catch (const model::QueryError& q) {
                throw bad(key, q.what());
            }
            e.op = v.get<std::string>();
        } else if (key == "name") {
            if (!v.is_string()) throw bad(key, "must be a string");
            e.name = v.get<std::string>();
        } else {
            const Spec* spec = find_spec(key);
            if (!spec)
                throw bad(key, fmt::format("unknown key (selectors: step, file, op, name; properties: {})", join(property_keys())));
            switch (spec->kind) {
            case Kind::boolean:
                if (!v.is_boolean()) throw bad(key, "must be true or false");
                break;
            case Kind::count:
                if (!v.is_number_integer() || v.get<int64_t>() < 0) throw bad(key, "must be an integer from 0");
                break;
            case Kind::positive:
                if (!v.is_number_integer() || v.get<int64_t>() < 1) throw bad(key, "must be an integer from 1");
                break;
            case Kind::number:
                if (!v.is_number() || v.get<double>() < 0) throw bad(key, "must be a number from 0");
                break;
            case Kind::string:
                if (!v.is_string()) throw bad(key, "must be a string");
                if (!spec->one_of.empty() && std::find(spec->one_of.begin(), spec->one_of.end(), v.get<std::string>()) == spec->one_of.end()) {
                    throw bad(key, fmt::format("'{}' is not one of {}", v.get<std::string>(), join(spec->one_of)));
                }
                break;
            case Kind::strings:
                if (v.is_string()) break;
                if (!v.is_array() || v.empty() || !std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_string(); }))
                    throw bad(key, "must be a function name or a list of them");
                break;
            }
            e.properties.push_back({key, v, at(key)});
        }
    }
    // In the order written (JSON objects come sorted by key).
    std::stable_sort(e.properties.begin(), e.properties.end(), [&](const Property& a, const Property& b) {
        auto la = key_lines.find(a.key), lb = key_lines.find(b.key);
        return (la == key_lines.end() ? 0 : la->second) < (lb == key_lines.end() ? 0 : lb->second);
    });
    if (e.properties.empty())
        throw ExpectError(fmt::format("{}: the expectation has no property to check (one of: {})", where, join(property_keys())));
    for (const auto& p : e.properties) {
        const Spec* spec = find_spec(p.key);
        if (spec->needs == Needs::file && !e.file) throw ExpectError(fmt::format("{}: expect.{} needs file = the file it is about", p.where, p.key));
        if (spec->needs == Needs::step && !e.step) throw ExpectError(fmt::format("{}: expect.{} needs step = the step it is about", p.where, p.key));
    }
    return e;
}

std::vector<Expectation> parse_expectations(const std::vector<scenario::ExpectTable>& tables, const std::string& file) {
    std::vector<Expectation> out;
    for (size_t i = 0; i < tables.size(); ++i) {
        const auto& t = tables[i];
        const std::string where = file.empty() ? fmt::format("expectation {}", i) : fmt::format("{}:{}", file, t.line);
        out.push_back(parse_expectation(t.values, where, file, t.key_lines));
    }
    return out;
}

std::vector<Expectation> load_expectations(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw ExpectError(fmt::format("{}: cannot read the expectations file", path));
    std::stringstream ss;
    ss << in.rdbuf();
    try {
        return parse_expectations(scenario::parse_expect_file(ss.str(), path), path);
    } catch (const scenario::ScenarioError& e) {
        throw ExpectError(e.what());
    }
}

void validate(const Expectation& e, const scenario::Scenario& sc) {
    if (e.step && static_cast<size_t>(*e.step) >= sc.steps.size())
        throw ExpectError(fmt::format("{}: expect.step {}: the scenario's steps are 0..{}", e.step_where, *e.step, sc.steps.size() - 1));
    if (e.file) {
        std::vector<std::string> known;
        for (const auto& f : sc.disk.files) {
            if (*e.file == f.path || *e.file == std::string(scenario::kMountpoint) + f.path) return;
            known.push_back(std::string(scenario::kMountpoint) + f.path);
        }
        throw ExpectError(fmt::format("{}: expect.file '{}' is not in [[disk.files]] ({})", e.file_where, *e.file, known.empty() ? "none" : join(known)));
    }
}

std::string to_text(const CheckResult& r) { return fmt::format("{} {} {}: {}", r.ok ? "PASS" : "FAIL", r.where, r.property, r.message); }

json to_json(const CheckResult& r) {
    json j = {{"where", r.where}, {"property", r.property}, {"ok", r.ok}, {"message", r.message}, {"offenders", r.offenders}};
    j["offender_seq"] = r.offender_seq ? json(*r.offender_seq) : json();
    return j;
}

namespace {

// What an expectation looks at, resolved against the run.
struct Selection {
    explicit Selection(const model::Run& r) : run(r) {}
    const model::Run& run;
    const model::Step* step = nullptr;
    int file = -1;
    std::string label;  // "step 2 read /mnt/f1.bin", "file /mnt/f1.bin", "the run"
    std::string what;   // "read requests", "requests"
    std::vector<const model::Request*> all;   // every request selected (any op unless op was given)
    std::vector<const model::Request*> data;  // the ones with a sector range
    std::vector<model::FileHit> hits;         // with file: data requests touching it
    std::optional<std::string> op;

    const model::File& f() const { return run.files[static_cast<size_t>(file)]; }
    // The data requests a shape property is about, with the file offset each starts at in the file (if any).
    std::vector<std::pair<const model::Request*, std::optional<uint64_t>>> shaped() const {
        std::vector<std::pair<const model::Request*, std::optional<uint64_t>>> out;
        if (file >= 0)
            for (const auto& h : hits) out.emplace_back(h.request, h.file_offset);
        else
            for (const auto* r : data) out.emplace_back(r, std::nullopt);
        return out;
    }
    // With a file, the request carrying its last byte (the tail a read may end with).
    bool is_tail(const model::FileHit& h) const { return file >= 0 && h.file_offset + h.file_bytes >= f().size; }
};

std::string offender(const Selection& s, const model::Request& r, std::optional<uint64_t> file_offset) {
    std::string out = fmt::format("first offender seq {} sector {}", r.seq, r.sector);
    if (!file_offset && s.file >= 0)
        for (const auto& h : model::file_hits(s.run, s.file, {&r})) file_offset = h.file_offset;
    if (!file_offset && r.file >= 0) return out + fmt::format(" ({} offset {})", s.run.files[static_cast<size_t>(r.file)].guest_path, r.file_offset);
    if (file_offset) out += fmt::format(" (file offset {})", *file_offset);
    return out;
}

// "3 requests of 4096 bytes", "3 requests of 512..4096 bytes"
std::string sized(uint64_t n, uint64_t total, uint64_t lo, uint64_t hi) {
    const std::string count = n == total ? fmt::format("{} request{}", n, n == 1 ? "" : "s") : fmt::format("{} of {} requests", n, total);
    return lo == hi ? fmt::format("{} of {} bytes", count, lo) : fmt::format("{} of {}..{} bytes", count, lo, hi);
}

struct Outcome {
    bool holds = false;
    std::string got;       // what was found
    std::string expected;  // what was wanted, for failures
    const model::Request* first = nullptr;
    std::optional<uint64_t> first_offset;
    uint64_t offenders = 0;
    std::string extra;  // more about the offender
};

// Collects offenders of a per-request predicate over the shaped requests.
template <typename Pred>
Outcome per_request(const Selection& s, Pred bad, bool skip_tail = false) {
    Outcome o;
    uint64_t lo = UINT64_MAX, hi = 0, total = 0;
    if (s.file >= 0) {
        for (const auto& h : s.hits) {
            ++total;
            if (skip_tail && s.is_tail(h)) continue;
            if (!bad(*h.request)) continue;
            if (!o.offenders++) o.first = h.request, o.first_offset = h.file_offset;
            lo = std::min(lo, h.request->bytes), hi = std::max(hi, h.request->bytes);
        }
    } else {
        for (const auto* r : s.data) {
            ++total;
            if (!bad(*r)) continue;
            if (!o.offenders++) o.first = r;
            lo = std::min(lo, r->bytes), hi = std::max(hi, r->bytes);
        }
    }
    o.holds = o.offenders == 0;
    o.got = o.holds ? fmt::format("{} requests", total) : sized(o.offenders, total, lo, hi);
    return o;
}

// A shape property (one about each request's size, place or order) over no
// requests fails: there is nothing to check it on.
std::optional<Outcome> nothing_to_shape(const Selection& s) {
    if ((s.file >= 0 ? s.hits.size() : s.data.size()) != 0) return std::nullopt;
    Outcome o;
    o.got = fmt::format("no {}{}", s.what, s.file >= 0 ? fmt::format(" touch {}", s.f().guest_path) : "");
    o.expected = "requests to check";
    return o;
}

Outcome check_requests(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const std::string want = v.get<std::string>();
    if (want == "none" || want == "some") {
        const uint64_t n = s.file >= 0 ? s.hits.size() : s.all.size();
        o.holds = want == "none" ? n == 0 : n > 0;
        o.got = fmt::format("{} {}", n, s.what);
        o.expected = want == "none" ? "no requests" : "some requests";
        o.offenders = want == "none" ? n : 0;
        if (want == "none" && n) {
            if (s.file >= 0) o.first = s.hits[0].request, o.first_offset = s.hits[0].file_offset;
            else o.first = s.all[0];
        }
        return o;
    }
    if (auto none = nothing_to_shape(s)) return *none;
    if (s.file >= 0 && s.f().size <= kPage) {
        o.holds = true;
        o.got = fmt::format("{} is one page or less", s.f().guest_path);
        return o;
    }
    o = per_request(s, [](const model::Request& r) { return r.bytes <= kPage; }, true);
    o.expected = "multi-page requests";
    if (o.holds) o.got += s.file >= 0 ? ", all larger than a page (the one ending the file aside)" : ", all larger than a page";
    return o;
}

Outcome check_max_request_bytes(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const uint64_t n = v.get<uint64_t>();
    o = per_request(s, [&](const model::Request& r) { return r.bytes > n; });
    o.expected = fmt::format("at most {} bytes each", n);
    if (o.holds) o.got += ", " + o.expected;
    return o;
}

Outcome check_min_request_bytes(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const uint64_t n = v.get<uint64_t>();
    o = per_request(s, [&](const model::Request& r) { return r.bytes < n; });
    o.expected = fmt::format("at least {} bytes each", n);
    if (o.holds) o.got += ", " + o.expected;
    return o;
}

Outcome check_request_bytes_multiple_of(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const uint64_t n = v.get<uint64_t>();
    o = per_request(s, [&](const model::Request& r) { return r.bytes % n != 0; }, true);
    o.expected = fmt::format("multiples of {} bytes{}", n, s.file >= 0 ? " (but for the one ending the file)" : "");
    if (o.holds) o.got += ", " + o.expected;
    return o;
}

Outcome check_file_offset_multiple_of(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const uint64_t n = v.get<uint64_t>();
    for (const auto& h : s.hits)
        if (h.file_offset % n && !o.offenders++) o.first = h.request, o.first_offset = h.file_offset;
    o.holds = o.offenders == 0;
    o.got = o.holds ? fmt::format("{} requests", s.hits.size()) : fmt::format("{} of {} requests start off a {}-byte boundary of the file", o.offenders, s.hits.size(), n);
    o.expected = fmt::format("each to start at a file offset that is a multiple of {}", n);
    return o;
}

Outcome check_max_segments(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const uint64_t n = v.get<uint64_t>();
    uint64_t most = 0;
    o = per_request(s, [&](const model::Request& r) {
        most = std::max<uint64_t>(most, r.nsegs);
        return r.nsegs > n;
    });
    if (!o.holds) o.got += fmt::format(" with more than {} segments (most {})", n, most);
    o.expected = fmt::format("at most {} segments each", n);
    if (o.holds) o.got += fmt::format(", {} (most {})", o.expected, most);
    return o;
}

Outcome check_request_count(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const uint64_t n = v.get<uint64_t>();
    const uint64_t got = s.file >= 0 ? s.hits.size() : s.all.size();
    o.holds = k == "request_count_min" ? got >= n : got <= n;
    o.got = fmt::format("{} {}", got, s.what);
    o.expected = fmt::format("{} {}", k == "request_count_min" ? "at least" : "at most", n);
    if (!o.holds && k == "request_count_max") {
        o.offenders = got - n;
        if (s.file >= 0) o.first = s.hits[n].request, o.first_offset = s.hits[n].file_offset;
        else o.first = s.all[n];
        o.extra = " (the first one past the limit)";
    }
    return o;
}

Outcome check_status(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const std::string want = v.get<std::string>();
    auto bad = [&](const model::Request& r) { return want != trace::status_label(r.status); };
    const auto& reqs = s.all;
    for (const auto* r : reqs)
        if (bad(*r) && !o.offenders++) o.first = r;
    if (s.file >= 0) {
        o.offenders = 0;
        o.first = nullptr;
        for (const auto& h : s.hits)
            if (bad(*h.request) && !o.offenders++) o.first = h.request, o.first_offset = h.request->bytes ? std::optional(h.file_offset) : std::nullopt;
    }
    o.holds = o.offenders == 0;
    o.got = o.holds ? fmt::format("{} {}", s.file >= 0 ? s.hits.size() : reqs.size(), s.what)
                    : fmt::format("{} {} with status {}", o.offenders, s.what, trace::status_label(o.first->status));
    o.expected = fmt::format("status {}", want);
    return o;
}

Outcome check_ascending(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    std::vector<const model::Request*> reqs;
    for (const auto& [r, off] : s.shaped()) reqs.push_back(r);
    const model::Request* prev = nullptr;
    for (const auto* r : reqs) {
        if (prev && r->sector < prev->end_sector() && !o.offenders++) {
            o.first = r;
            o.extra = fmt::format(" after seq {} ended at sector {}", prev->seq, prev->end_sector());
        }
        prev = r;
    }
    o.holds = o.offenders == 0;
    o.got = o.holds ? fmt::format("{} requests in ascending order", reqs.size()) : fmt::format("{} backward seeks in {} requests", o.offenders, reqs.size());
    o.expected = "ascending order (each request starting at or after the previous one's end)";
    return o;
}

Outcome check_extent_gaps(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    uint64_t crossing = 0;
    for (const auto& h : s.hits)
        if (h.crosses_extent && !crossing++) o.first = h.request, o.first_offset = h.file_offset;
    o.offenders = crossing;
    if (crossing) o.got = fmt::format("{} of {} requests cross an extent gap", crossing, s.hits.size());
    if (k == "split_at_extents" && !crossing) {
        // One contiguous run of requests per extent: each request of an
        // extent starts where the previous one of that extent ended.
        std::map<uint32_t, uint64_t> end_of;  // extent -> file offset the last request reached
        std::map<uint32_t, uint64_t> runs;
        for (const auto& h : s.hits) {
            auto it = end_of.find(h.extent);
            if (it == end_of.end() || it->second != h.file_offset) {
                if (++runs[h.extent] == 2 && !o.offenders++) {
                    o.first = h.request, o.first_offset = h.file_offset;
                    o.extra = fmt::format(" (extent {} at file offset {} read again or out of order)", h.extent, s.f().extents[h.extent].file_offset);
                }
            }
            end_of[h.extent] = h.file_offset + h.file_bytes;
        }
        if (o.offenders) {
            uint64_t extra_runs = 0;
            for (const auto& [x, n] : runs) extra_runs += n - 1;
            o.offenders = extra_runs;
            o.got = fmt::format("{} extents read in more than one run of requests", std::count_if(runs.begin(), runs.end(), [](auto& x) { return x.second > 1; }));
        } else {
            o.got = fmt::format("{} requests in {} runs, one per extent read ({} extents)", s.hits.size(), runs.size(), s.f().extents.size());
        }
    }
    o.holds = o.offenders == 0;
    if (o.holds && k == "no_request_crosses_extent_gap") o.got = fmt::format("none of {} requests crosses an extent gap", s.hits.size());
    o.expected = k == "split_at_extents" ? "one run of requests per extent, split exactly at each extent gap" : "no request crossing an extent gap";
    return o;
}

Outcome check_covers_file(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const auto& file = s.f();
    std::vector<std::pair<uint64_t, uint64_t>> ranges;  // sector ranges the requests carried
    for (const auto& h : s.hits) ranges.emplace_back(h.request->sector, h.request->end_sector());
    std::sort(ranges.begin(), ranges.end());
    // Their union, as disjoint sorted ranges, so each extent finds its first by binary search.
    std::vector<std::pair<uint64_t, uint64_t>> merged;
    for (const auto& r : ranges) {
        if (!merged.empty() && r.first <= merged.back().second) merged.back().second = std::max(merged.back().second, r.second);
        else merged.push_back(r);
    }
    ranges = std::move(merged);
    std::optional<uint64_t> gap_at;
    uint64_t missing = 0;
    for (const auto& e : file.extents) {
        const uint64_t bytes = std::min<uint64_t>(sectors::to_bytes(e.sectors), file.size > e.file_offset ? file.size - e.file_offset : 0);
        const uint64_t lo = e.sector, hi = e.sector + sectors::covering(bytes);
        uint64_t at = lo;
        auto first = std::lower_bound(ranges.begin(), ranges.end(), std::pair<uint64_t, uint64_t>(lo, 0));
        if (first != ranges.begin() && std::prev(first)->second > lo) --first;
        for (auto it = first; it != ranges.end() && it->first < hi; ++it) {
            const auto [a, b] = *it;
            if (b <= at) continue;
            if (a > at) {
                missing += a - at;
                if (!gap_at) gap_at = e.file_offset + sectors::to_bytes(at - lo);
            }
            at = std::max(at, b);
            if (at >= hi) break;
        }
        if (at < hi) {
            missing += hi - at;
            if (!gap_at) gap_at = e.file_offset + sectors::to_bytes(at - lo);
        }
    }
    o.holds = missing == 0;
    o.got = o.holds ? fmt::format("{} requests carry all of {} ({} bytes)", s.hits.size(), file.guest_path, file.size)
                    : fmt::format("{} sectors of {} were not carried by any request; the first missing is file offset {}", missing, file.guest_path, *gap_at);
    o.expected = "every byte of the file carried";
    return o;
}

Outcome check_merge_ratio(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const double want = v.get<double>();
    std::vector<const model::Request*> reqs;
    if (s.file >= 0)
        for (const auto& h : s.hits) reqs.push_back(h.request);
    else
        reqs = s.data.empty() ? s.all : s.data;
    uint64_t matched = 0;
    for (const auto* r : reqs) matched += r->issue >= 0;
    const double ratio = model::merge_ratio(s.run, reqs);
    if (!matched) {
        o.got = fmt::format("none of {} {} was matched to a guest request, so there are no bios to count", reqs.size(), s.what);
        o.expected = "matched requests";
        return o;
    }
    const bool min = k == "merge_ratio_min";
    o.holds = min ? ratio >= want : ratio <= want;
    o.got = fmt::format("{:.2f} bios per request over {} matched requests", ratio, matched);
    o.expected = fmt::format("{} {:.2f}", min ? "at least" : "at most", want);
    if (!o.holds)
        for (const auto* r : reqs) {
            const double n = r->issue >= 0 ? model::bio_count(s.run, *r) : want;
            if ((min ? n < want : n > want) && !o.offenders++) {
                o.first = r;
                o.extra = fmt::format(" ({} bios)", model::bio_count(s.run, *r));
            }
        }
    return o;
}

Outcome check_functions(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    std::vector<std::string> want;
    if (v.is_string()) want.push_back(v.get<std::string>());
    else for (const auto& x : v) want.push_back(x.get<std::string>());
    if (s.step && !s.step->guest_bracketed) {
        o.got = "the guest trace does not hold this step's marker reads, so its function hits are unknown";
        o.expected = "a guest trace";
        return o;
    }
    const auto hit = model::functions_hit(s.run, s.step ? std::optional<int>(s.step->index) : std::nullopt);
    std::vector<std::string> wrong;
    for (const auto& f : want)
        if (hit.count(f) != (k == "functions_hit")) wrong.push_back(f);
    o.holds = wrong.empty();
    o.offenders = wrong.size();
    const std::vector<std::string> hit_list(hit.begin(), hit.end());
    o.got = fmt::format("{} {}; hit: {}", k == "functions_hit" ? "not hit:" : "hit:", wrong.empty() ? "-" : join(wrong),
                        hit_list.empty() ? "none" : join(hit_list));
    if (o.holds) o.got = fmt::format("hit: {}", hit_list.empty() ? "none" : join(hit_list));
    o.expected = fmt::format("{} {}", k == "functions_hit" ? "hits of" : "no hits of", join(want));
    return o;
}

Outcome check_faulted_requests(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    const uint64_t n = v.get<uint64_t>();
    std::vector<const model::Request*> reqs;
    if (s.file >= 0)
        for (const auto& h : s.hits) reqs.push_back(h.request);
    else
        reqs = s.all;
    const auto hits = model::fault_hits(reqs);
    o.holds = k == "faulted_requests_min" ? hits.size() >= n : hits.size() <= n;
    o.got = fmt::format("{} of {} {} hit by fault rules", hits.size(), reqs.size(), s.what);
    o.expected = fmt::format("{} {}", k == "faulted_requests_min" ? "at least" : "at most", n);
    if (!o.holds && k == "faulted_requests_max") {
        o.first = hits[n];
        o.offenders = hits.size() - n;
        o.extra = " (the first one past the limit)";
    }
    return o;
}

Outcome check_flush_after_writes(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    std::vector<const model::Request*> writes, flushes;
    for (const auto* r : model::requests(s.run, {s.step->index, std::nullopt})) {
        if (r->type == 4) flushes.push_back(r);                       // VIRTIO_BLK_T_FLUSH
        else if (r->type == 1 || r->type == 13) writes.push_back(r);  // OUT, WRITE_ZEROES
    }
    if (s.file >= 0) {
        std::vector<const model::Request*> mine;
        for (const auto& h : model::file_hits(s.run, s.file, writes)) mine.push_back(h.request);
        writes = mine;
    }
    o.expected = "every write to complete before a flush, which completes before the step ends";
    if (writes.empty()) {
        o.got = fmt::format("no writes{}", s.file >= 0 ? " to " + s.f().guest_path : "");
        return o;
    }
    if (flushes.empty()) {
        o.got = fmt::format("{} writes and no flush", writes.size());
        o.first = writes.back();
        o.offenders = writes.size();
        o.extra = " (the last write)";
        return o;
    }
    const model::Request* f = flushes.back();
    for (const auto* w : writes)
        if ((w->seq > f->seq || w->t_complete_ns > f->t_submit_ns) && !o.offenders++) {
            o.first = w;
            o.extra = fmt::format(" (completed after flush seq {} was taken)", f->seq);
        }
    uint64_t end_t = 0;
    for (const auto& m : s.run.markers)
        if (static_cast<int64_t>(m.index) == markers::end_of(s.step->marker_end, s.step->agent_index)) end_t = m.t_ns;
    if (o.offenders) {
        o.got = fmt::format("{} of {} writes completed after the last flush (seq {}) was taken", o.offenders, writes.size(), f->seq);
    } else if (f->status != trace::kStatusOk) {
        o.got = fmt::format("the last flush (seq {}) failed: {}", f->seq, trace::status_label(f->status));
        o.first = f;
        o.offenders = 1;
    } else if (end_t && f->t_complete_ns > end_t) {
        o.got = fmt::format("the last flush (seq {}) completed after the step's end marker", f->seq);
        o.first = f;
        o.offenders = 1;
    } else {
        o.holds = true;
        o.got = fmt::format("{} writes, then flush seq {} completed before the step ended", writes.size(), f->seq);
    }
    return o;
}

Outcome check_no_findings(const Selection& s, [[maybe_unused]] const json& v, [[maybe_unused]] const std::string& k) {
    Outcome o;
    o.holds = s.run.findings.empty();
    if (!o.holds) {
        // A finding is a line saying what, then its first items: the line and the first item.
        std::string first = s.run.findings.front();
        const size_t nl = first.find('\n');
        if (nl != std::string::npos) {
            const size_t nl2 = first.find('\n', nl + 1);
            first = first.substr(0, nl) + " " + first.substr(nl + 3, nl2 == std::string::npos ? std::string::npos : nl2 - nl - 3);
        }
        o.got = fmt::format("{} findings; the first: {}", s.run.findings.size(), first);
    } else {
        o.got = "no findings";
    }
    o.offenders = s.run.findings.size();
    o.expected = "the guest's and the device's requests to correspond";
    return o;
}

// One row per property: its name, its value's type, the selectors it needs,
// whether it is about each request's shape, and its check.
const std::vector<Spec>& specs() {
    static const std::vector<Spec> s = {
        // key                              value             needs          shape  check
        {"requests", Kind::string, Needs::none, false, check_requests, {"multi_page", "none", "some"}},
        {"max_request_bytes", Kind::count, Needs::none, true, check_max_request_bytes},
        {"min_request_bytes", Kind::count, Needs::none, true, check_min_request_bytes},
        {"request_bytes_multiple_of", Kind::positive, Needs::none, true, check_request_bytes_multiple_of},
        {"file_offset_multiple_of", Kind::positive, Needs::file, true, check_file_offset_multiple_of},
        {"max_segments", Kind::count, Needs::none, true, check_max_segments},
        {"request_count_min", Kind::count, Needs::none, false, check_request_count},
        {"request_count_max", Kind::count, Needs::none, false, check_request_count},
        {"status", Kind::string, Needs::none, false, check_status, {"ok", "ioerr", "unsupp", "none"}},
        {"ascending", Kind::boolean, Needs::none, true, check_ascending},
        {"split_at_extents", Kind::boolean, Needs::file, true, check_extent_gaps},
        {"no_request_crosses_extent_gap", Kind::boolean, Needs::file, true, check_extent_gaps},
        {"covers_file", Kind::boolean, Needs::file, false, check_covers_file},
        {"merge_ratio_min", Kind::number, Needs::none, false, check_merge_ratio},
        {"merge_ratio_max", Kind::number, Needs::none, false, check_merge_ratio},
        {"functions_hit", Kind::strings, Needs::none, false, check_functions},
        {"functions_not_hit", Kind::strings, Needs::none, false, check_functions},
        {"faulted_requests_min", Kind::count, Needs::none, false, check_faulted_requests},
        {"faulted_requests_max", Kind::count, Needs::none, false, check_faulted_requests},
        {"flush_after_writes", Kind::boolean, Needs::step, false, check_flush_after_writes},
        {"no_findings", Kind::boolean, Needs::none, false, check_no_findings},
    };
    return s;
}

Outcome check_property(const Selection& s, const Property& p) {
    const Spec* spec = find_spec(p.key);
    if (!spec) throw ExpectError(fmt::format("{}: expect.{}: not a property", p.where, p.key));  // parse_expectation lets only known keys through
    if (spec->shape)
        if (auto none = nothing_to_shape(s)) return *none;
    return spec->check(s, p.value, p.key);
}

}  // namespace

std::vector<CheckResult> check(const model::Run& run, const Expectation& e) {
    Selection s(run);
    try {
        if (e.step) s.step = &model::step_or_throw(run, *e.step);
    } catch (const model::QueryError& q) {
        throw ExpectError(fmt::format("{}: expect.{}", e.step_where, q.what()));
    }
    try {
        if (e.file) s.file = model::file_or_throw(run, *e.file);
    } catch (const model::QueryError& q) {
        throw ExpectError(fmt::format("{}: expect.{}", e.file_where, q.what()));
    }
    s.op = e.op;
    if (s.step) {
        s.label = model::step_label(*s.step);
        if (s.file >= 0 && s.step->path != s.f().guest_path) s.label += fmt::format(" (file {})", s.f().guest_path);
    } else {
        s.label = s.file >= 0 ? fmt::format("file {}", s.f().guest_path) : "the run";
    }
    s.what = e.op ? *e.op + " requests" : "requests";
    s.all = model::requests(run, {e.step, e.op});
    for (const auto* r : s.all)
        if (r->is_data()) s.data.push_back(r);
    if (s.file >= 0) s.hits = model::file_hits(run, s.file, s.data);

    std::vector<CheckResult> out;
    for (const auto& p : e.properties) {
        Outcome o = check_property(s, p);
        const bool negated = p.value.is_boolean() && !p.value.get<bool>();
        CheckResult r;
        r.where = p.where;
        r.property = p.key;
        r.ok = negated ? !o.holds : o.holds;
        const std::string head = e.name.empty() ? s.label : fmt::format("{} [{}]", s.label, e.name);
        if (r.ok) {
            r.message = negated ? fmt::format("{}: {}: {} (as expected, {} = false)", head, p.key, o.got, p.key) : fmt::format("{}: {}", head, o.got);
        } else if (negated) {
            r.message = fmt::format("{}: {}; expected it not to hold ({} = false)", head, o.got, p.key);
        } else {
            r.message = fmt::format("{}: {}; expected {}", head, o.got, o.expected);
            if (o.first) {
                r.message += "; " + offender(s, *o.first, o.first_offset) + o.extra;
                r.offender_seq = o.first->seq;
            }
            r.offenders = o.offenders;
        }
        out.push_back(std::move(r));
    }
    return out;
}

std::vector<CheckResult> check_all(const model::Run& run, const std::vector<Expectation>& es) {
    std::vector<CheckResult> out;
    // A trace with records no device writes is corrupt: nothing checked against it can hold.
    if (!run.trace_bad.empty())
        out.push_back({"the device trace", "valid_records", false,
                       fmt::format("{} impossible record{} (left out of the model); the first: {}", run.trace_bad.size(),
                                   run.trace_bad.size() == 1 ? "" : "s", run.trace_bad.front()),
                       std::nullopt, run.trace_bad.size()});
    // Each check reads the run and nothing else: they run side by side, a
    // worker per core taking the next, and report in the order written.
    std::vector<std::vector<CheckResult>> each(es.size());
    std::atomic<size_t> next{0};
    auto work = [&] {
        for (size_t i; (i = next.fetch_add(1)) < es.size();) each[i] = check(run, es[i]);
    };
    const size_t helpers = std::min<size_t>(es.size(), std::max(1u, std::thread::hardware_concurrency())) - (es.empty() ? 0 : 1);
    std::vector<std::future<void>> running;
    for (size_t k = 0; k < helpers; ++k) running.push_back(std::async(std::launch::async, work));
    work();
    for (auto& f : running) f.get();  // a check's exception reaches the caller
    for (auto& rs : each)
        for (auto& r : rs) out.push_back(std::move(r));
    return out;
}

}  // namespace blkrig::checks
