// The report pages: the run model and verdict.json turned into one JSON blob,
// inlined with uPlot and the page's own script into a self-contained HTML file.
#include "report/report.hpp"

#include "common/markers.hpp"

#include "folder/run_folder.hpp"
#include "report/crash_page.hpp"
#include "report/html.hpp"

#include "checks/expect.hpp"
#include "scenario/scenario.hpp"
#include "trace/format.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#ifndef BLKRIG_SOURCE_DIR
#define BLKRIG_SOURCE_DIR "."
#endif

namespace blkrig::report {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path Options::default_web_dir() {
    const char* d = std::getenv("BLKRIG_SOURCE_DIR");
    return fs::path(d && *d ? d : BLKRIG_SOURCE_DIR) / "harness" / "report" / "web";
}

namespace {

// The plot's marks, in drawing order (faulted last, on top).
const std::vector<std::string> kMarks = {"read", "write", "flush", "discard", "other", "faulted"};
enum Mark { kRead, kWrite, kFlush, kDiscard, kOther, kFaulted };

// Faulted: a rule fired on it, or it did not complete OK.
int mark_of(const model::Request& r) {
    if (r.fault_action != 0 || r.status != trace::kStatusOk) return kFaulted;
    switch (r.type) {
    case 0: return kRead;
    case 1: return kWrite;
    case 4: return kFlush;
    case 11: case 13: case 14: return kDiscard;  // discard, write zeroes, secure erase: sectors dropped
    default: return kOther;
    }
}

std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw ReportError(3, fmt::format("{} is missing: run `npm ci` in {} (ci/setup does)", p.string(), p.parent_path().string()));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct Assets {
    std::string uplot_js, uplot_css, report_js, report_css;
};

Assets load_assets(const fs::path& web) {
    const fs::path dist = web / "node_modules" / "uplot" / "dist";
    for (const auto& f : {dist / "uPlot.iife.min.js", dist / "uPlot.min.css"})
        if (!fs::is_regular_file(f))
            throw ReportError(3, fmt::format("{} is missing: the report's plotting library is not installed; run `npm ci` in {} (ci/setup does)",
                                             f.string(), web.string()));
    return {read_text(dist / "uPlot.iife.min.js"), read_text(dist / "uPlot.min.css"), read_text(web / "report.js"),
            read_text(web / "report.css")};
}

// Text inside <script> or <style> must not close it early.
std::string inline_safe(std::string s) {
    for (size_t p = 0; (p = s.find("</", p)) != std::string::npos; p += 3) s.replace(p, 2, "<\\/");
    return s;
}


// Bucket k of a log2 histogram: [2^k, 2^(k+1)); 0 stays its own bucket.
int log2_bucket(uint64_t v) { return v == 0 ? -1 : 63 - __builtin_clzll(v); }

std::string size_label(int k) {
    if (k < 0) return "0";
    const uint64_t v = uint64_t{1} << k;
    if (v >= (1u << 20)) return fmt::format("{}M", v >> 20);
    if (v >= 1024) return fmt::format("{}K", v >> 10);
    return fmt::format("{}", v);
}

std::string usec_label(int k) {
    if (k < 0) return "<1us";
    const double v = static_cast<double>(uint64_t{1} << k);
    if (v >= 1e6) return fmt::format("{:.3g}s", v / 1e6);
    if (v >= 1e3) return fmt::format("{:.3g}ms", v / 1e3);
    return fmt::format("{}us", v);
}

// Per mark, counts by bucket over the buckets in use from the lowest to the
// highest; the zero bucket (flushes' bytes) in front only when it is used.
json histogram(const std::vector<std::vector<int>>& buckets_by_mark, std::string (*label)(int)) {
    int lo = std::numeric_limits<int>::max(), hi = std::numeric_limits<int>::min();
    bool zero = false;
    for (const auto& v : buckets_by_mark)
        for (int b : v) {
            if (b < 0) zero = true;
            else lo = std::min(lo, b), hi = std::max(hi, b);
        }
    json j = {{"labels", json::array()}, {"series", json::object()}};
    std::vector<int> buckets;
    if (zero) buckets.push_back(-1);
    for (int k = lo; k <= hi; ++k) buckets.push_back(k);
    if (buckets.empty()) return j;
    for (int k : buckets) j["labels"].push_back(label(k));
    const int first = zero ? lo - 1 : lo;  // position of bucket b: b - first, the zero bucket at 0
    for (size_t m = 0; m < buckets_by_mark.size(); ++m) {
        if (buckets_by_mark[m].empty()) continue;
        std::vector<uint64_t> c(buckets.size());
        for (int b : buckets_by_mark[m]) ++c[b < 0 ? 0 : static_cast<size_t>(b - first)];
        j["series"][kMarks[m]] = c;
    }
    return j;
}

json expect_results(const model::Run& run, const json& verdict, std::vector<std::string>& problems) {
    if (verdict.is_object() && verdict.contains("expect") && verdict["expect"].is_array()) return verdict["expect"];
    // No verdict (a folder not written by blkrig run): check scenario.toml's tables here.
    const fs::path sc = run.dir / "scenario.toml";
    json out = json::array();
    if (!fs::exists(sc)) return out;
    try {
        const auto es = checks::parse_expectations(scenario::load_scenario(sc.string()).expects, sc.string());
        for (const auto& r : checks::check_all(run, es)) out.push_back(checks::to_json(r));
    } catch (const std::exception& e) {
        problems.push_back(fmt::format("the [[expect]] tables could not be checked: {}", e.what()));
    }
    return out;
}

// A file written whole or not at all: a temporary next to it, renamed.
void write_atomically(const fs::path& out, const std::string& text) {
    const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
    if (!fs::is_directory(dir)) throw ReportError(2, fmt::format("cannot write {}: no folder {}", out.string(), dir.string()));
    try {
        folder::write_atomic(out, text);
    } catch (const folder::FolderError& e) {
        throw ReportError(3, e.what());
    }
}

// A folder blkrig run wrote, checked cheaply (load_run says more).
void check_run_dir(const fs::path& dir) {
    if (!fs::is_directory(dir)) throw ReportError(2, fmt::format("{} is not a run folder: no such folder", dir.string()));
    // An interrupted run is one, with less in it: say that, not "not a run folder".
    if (const auto why = folder::interruption(dir); why && !(fs::is_regular_file(dir / "trace.bin") && fs::is_regular_file(dir / "run.json")))
        throw ReportError(2, fmt::format("{}: {}, before the guest left anything to draw (verdict.json says what it had; run it again)",
                                         dir.string(), *why));
    if (!fs::is_regular_file(dir / "trace.bin"))
        throw ReportError(2, fmt::format("{} is not a run folder: it has no trace.bin (give a folder blkrig run wrote)", dir.string()));
    if (!fs::is_regular_file(dir / "run.json"))
        throw ReportError(2, fmt::format("{} is not a run folder: it has no run.json (give a folder blkrig run wrote)", dir.string()));
}

json read_verdict(const fs::path& dir, std::vector<std::string>& problems) {
    const fs::path p = dir / "verdict.json";
    if (!fs::exists(p)) return nullptr;
    std::ifstream in(p);
    auto j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        problems.push_back(fmt::format("{} is not a JSON object: left out", p.string()));
        return nullptr;
    }
    return j;
}

model::Run load(const fs::path& dir) {
    check_run_dir(dir);
    model::LoadOptions lo;
    lo.allow_truncated_trace = true;  // a run whose device died still deserves a picture
    try {
        return model::load_run(dir, lo);
    } catch (const model::RunError& e) {
        if (const auto why = folder::interruption(dir))
            throw ReportError(2, fmt::format("{}: {}; too little of it to draw (no usable {})", dir.string(), *why, e.file.filename().string()));
        throw ReportError(2, fmt::format("{}: not a usable run folder: {}", dir.string(), e.what()));
    }
}

std::string page_html(const std::string& title, const json& data, const Assets& a) {
    std::string h;
    h.reserve(a.uplot_js.size() + 4096);
    h += "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    h += "<title>" + html_escape(title) + "</title>\n";
    h += "<style>\n" + inline_safe(a.uplot_css) + "\n</style>\n<style>\n" + inline_safe(a.report_css) + "\n</style>\n</head>\n";
    h += "<body data-state=\"loading\">\n<div id=\"app\"><noscript>This report draws with JavaScript.</noscript></div>\n";
    h += "<script type=\"application/json\" id=\"blkrig-data\">" + inline_safe(data.dump(-1, ' ', false, json::error_handler_t::replace)) +
         "</script>\n";
    h += "<script>\n" + inline_safe(a.uplot_js) + "\n</script>\n<script>\n" + inline_safe(a.report_js) + "\n</script>\n</body>\n</html>\n";
    return h;
}

std::string outcome_of(const json& verdict) {
    return verdict.is_object() ? verdict.value("outcome", std::string("unknown")) : std::string("no verdict");
}

std::string run_name(const model::Run& run, const json& verdict) {
    if (verdict.is_object() && !verdict.value("name", std::string()).empty()) return verdict["name"].get<std::string>();
    return fs::absolute(run.dir).lexically_normal().filename().string();
}

}  // namespace

json page_data(const model::Run& run, const json& verdict, const Options& o) {
    std::vector<std::string> problems;
    if (verdict.is_object() && verdict.contains("problems") && verdict["problems"].is_array())
        for (const auto& p : verdict["problems"])
            if (p.is_string()) problems.push_back(p.get<std::string>());
    const json expect = expect_results(run, verdict, problems);

    // Device time: the earliest of the trace's start, requests and markers.
    uint64_t t0 = run.trace_header.t_start_ns ? run.trace_header.t_start_ns : std::numeric_limits<uint64_t>::max();
    for (const auto& r : run.requests) t0 = std::min(t0, r.t_submit_ns);
    for (const auto& m : run.markers) t0 = std::min(t0, m.t_ns);
    if (t0 == std::numeric_limits<uint64_t>::max()) t0 = 0;
    auto us = [&](uint64_t t) { return t >= t0 ? (t - t0) / 1000 : 0; };

    // Offenders: the first one each failed expectation names.
    json offenders = json::array();
    std::unordered_set<uint64_t> offender_seqs;
    for (const auto& e : expect) {
        if (e.value("ok", true) || !e.contains("offender_seq") || !e["offender_seq"].is_number_unsigned()) continue;
        const uint64_t seq = e["offender_seq"].get<uint64_t>();
        offender_seqs.insert(seq);
        json j = {{"where", e.value("where", "")}, {"property", e.value("property", "")}, {"seq", seq}, {"message", e.value("message", "")}};
        if (const auto* r = run.by_seq(seq))
            j.update({{"t", us(r->t_submit_ns)}, {"s", r->sector}, {"n", r->sectors()}, {"op", r->op()}, {"mark", kMarks[mark_of(*r)]}});
        offenders.push_back(j);
    }

    // Thinning: one request per (mark, time cell, sector cell) of a grid about
    // the plot's pixel size; faulted requests and offenders always stay.
    const bool thin = run.requests.size() > o.max_points;
    constexpr uint64_t kCellsX = 1000, kCellsY = 400;  // about the plot's size in CSS pixels, bars 3 px wide
    uint64_t t_max = 1, s_max = 1;
    for (const auto& r : run.requests) t_max = std::max(t_max, us(r.t_submit_ns) + 1), s_max = std::max(s_max, r.end_sector() + 1);
    std::vector<std::unordered_set<uint64_t>> cells(kMarks.size());

    struct Cols {
        std::vector<uint64_t> t, s, n, lat, seq;
        std::vector<int32_t> step;
    };
    std::vector<Cols> cols(kMarks.size());
    std::vector<std::vector<int>> size_b(kMarks.size()), lat_b(kMarks.size());
    std::vector<uint64_t> count(kMarks.size()), bytes(kMarks.size());
    std::vector<uint64_t> bt, bs, bn;  // the bios' columns
    const size_t max_bios = 4 * o.max_points;
    for (const auto& r : run.requests) {
        const int m = mark_of(r);
        const uint64_t lat = r.t_complete_ns >= r.t_submit_ns ? (r.t_complete_ns - r.t_submit_ns) / 1000 : 0;
        ++count[static_cast<size_t>(m)];
        bytes[static_cast<size_t>(m)] += r.bytes;
        size_b[static_cast<size_t>(m)].push_back(log2_bucket(r.bytes));
        lat_b[static_cast<size_t>(m)].push_back(log2_bucket(lat));
        const uint64_t t = us(r.t_submit_ns);
        if (thin && m != kFaulted && !offender_seqs.count(r.seq)) {
            const uint64_t cell = (t * kCellsX / t_max) * kCellsY + r.sector * kCellsY / s_max;
            if (!cells[static_cast<size_t>(m)].insert(cell).second) continue;
        }
        auto& c = cols[static_cast<size_t>(m)];
        c.t.push_back(t);
        c.s.push_back(r.sector);
        c.n.push_back(r.sectors());
        c.lat.push_back(lat);
        c.seq.push_back(r.seq);
        c.step.push_back(r.step >= 0 ? run.steps[static_cast<size_t>(r.step)].index : -1);
        // The guest's bios that made it (the model's correlation), drawn beside it.
        if (r.issue >= 0 && bt.size() < max_bios) {
            const auto& is = run.issues[static_cast<size_t>(r.issue)];
            for (uint32_t b = is.bios_begin; b < is.bios_begin + is.bios_count && b < run.bios.size(); ++b) {
                bt.push_back(t);
                bs.push_back(run.bios[b].sector);
                bn.push_back(run.bios[b].sectors);
            }
        }
    }
    const json bios = {{"t", bt}, {"s", bs}, {"n", bn}};

    json marks = json::array();
    size_t shown = 0;
    for (size_t m = 0; m < kMarks.size(); ++m) {
        const auto& c = cols[m];
        shown += c.t.size();
        marks.push_back({{"name", kMarks[m]}, {"count", count[m]}, {"bytes", bytes[m]}, {"t", c.t}, {"s", c.s}, {"n", c.n},
                         {"lat", c.lat}, {"seq", c.seq}, {"step", c.step}});
    }

    // Steps: where their markers put them in device time, and their verdicts.
    std::unordered_map<uint32_t, uint64_t> marker_t;
    for (const auto& mk : run.markers) marker_t.emplace(mk.index, mk.t_ns);
    std::map<int64_t, json> step_verdict;
    if (verdict.is_object() && verdict.contains("steps") && verdict["steps"].is_array())
        for (const auto& v : verdict["steps"])
            if (v.is_object() && v.contains("index")) step_verdict[v["index"].get<int64_t>()] = v;
    json steps = json::array();
    for (const auto& st : run.steps) {
        json j = {{"index", st.index}, {"agent_index", st.agent_index}, {"op", st.op}, {"path", st.path}, {"ran", st.ran}, {"ok", st.ok},
                  {"ret", st.ret}, {"error", st.error}, {"bytes", st.bytes}, {"requests", st.req_end - st.req_begin},
                  {"bracketed", st.bracketed}};
        const auto b = marker_t.find(static_cast<uint32_t>(markers::before_step(st.agent_index)));
        const auto e = marker_t.find(static_cast<uint32_t>(markers::after_step(st.agent_index)));
        j["t_begin"] = b != marker_t.end() ? json(us(b->second)) : json();
        j["t_end"] = e != marker_t.end() ? json(us(e->second)) : json();
        if (const auto v = step_verdict.find(st.index); st.index >= 0 && v != step_verdict.end()) {
            j["verdict"] = v->second.value("ok", false) ? "ok" : (v->second.value("ran", false) ? "failed" : "did not run");
            json failed = json::array();
            for (const auto& c : v->second.value("checks", json::array()))
                if (!c.value("ok", true))
                    failed.push_back(fmt::format("{} expected {}, got {}", c.value("what", ""), c.value("expected", ""), c.value("got", "")));
            j["failed_checks"] = failed;
        } else {
            j["verdict"] = st.index < 0 ? "added by the run" : (!st.ran ? "did not run" : (st.ok ? "ok" : "failed"));
        }
        steps.push_back(j);
    }

    json run_info = {{"dir", fs::absolute(run.dir).lexically_normal().string()},
                     {"name", run_name(run, verdict)},
                     {"outcome", outcome_of(verdict)},
                     {"requests", run.requests.size()},
                     {"capacity", run.trace_header.capacity_sectors},
                     {"queues", run.trace_header.num_queues},
                     {"marker_first_sector", run.marker_first_sector},
                     {"trace_incomplete", run.trace_incomplete},
                     {"guest_requests", run.issues.size()},
                     {"bios", run.bios.size()}};
    if (verdict.is_object()) {
        for (const char* k : {"scenario", "kernel"})
            if (verdict.contains(k) && verdict[k].is_string()) run_info[k] = verdict[k];
        if (verdict.contains("boot_seconds")) run_info["boot_seconds"] = verdict["boot_seconds"];
    }
    uint64_t matched = 0;
    for (const auto& is : run.issues) matched += is.request >= 0;
    run_info["matched"] = matched;

    return {{"version", 1},
            {"run", run_info},
            {"marks", marks},
            {"thinned", {{"on", thin}, {"total", run.requests.size()}, {"shown", shown}, {"cells", {kCellsX, kCellsY}}}},
            {"bios", bios},
            {"steps", steps},
            {"offenders", offenders},
            {"expect", expect},
            {"findings", run.findings},
            {"notes", run.notes},
            {"problems", problems},
            {"hist", {{"size", histogram(size_b, size_label)}, {"latency", histogram(lat_b, usec_label)}}}};
}

namespace {

IndexEntry write_one(const fs::path& dir, const fs::path& out, const Assets& a, const Options& o,
                     const model::Run* loaded = nullptr) {
    std::optional<model::Run> own;
    if (!loaded) own = load(dir);
    const model::Run& run = loaded ? *loaded : *own;
    std::vector<std::string> ignored;
    const json verdict = read_verdict(dir, ignored);
    json data = page_data(run, verdict, o);
    for (const auto& p : ignored) data["problems"].push_back(p);
    const fs::path page = out.empty() ? dir / "report.html" : out;
    const std::string name = run_name(run, verdict);
    write_atomically(page, page_html("blkrig report: " + name, data, a));
    return {dir, page, name, outcome_of(verdict), run.requests.size()};
}

}  // namespace

fs::path write_report(const fs::path& run_dir, const fs::path& out, const Options& o) {
    check_run_dir(run_dir);
    return write_one(run_dir, out, load_assets(o.web_dir), o).report;
}

void write_index(const std::vector<IndexEntry>& entries, const fs::path& out) {
    const fs::path base = fs::absolute(out.has_parent_path() ? out.parent_path() : fs::path(".")).lexically_normal();
    std::string rows;
    for (const auto& e : entries) {
        const std::string link = e.report.empty() ? "" : fs::absolute(e.report).lexically_normal().lexically_relative(base).generic_string();
        const std::string cls = e.outcome == "pass" ? "pass" : e.outcome == "fail" ? "fail" : "other";
        // A run that stopped before its page (skipped, bad input) is listed without a link.
        const std::string name = e.report.empty() ? html_escape(e.name) : fmt::format("<a href=\"{}\">{}</a>", html_escape(link), html_escape(e.name));
        rows += fmt::format("<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td><code>{}</code></td></tr>\n", name, cls,
                            html_escape(e.outcome), e.requests,
                            html_escape(fs::absolute(e.run_dir).lexically_normal().string()));
    }
    const std::string html = fmt::format(R"(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>blkrig reports</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #111827; }}
table {{ border-collapse: collapse; }}
th, td {{ border-bottom: 1px solid #e5e7eb; padding: 6px 12px; text-align: left; }}
td.pass {{ color: #15803d; font-weight: 600; }}
td.fail {{ color: #b91c1c; font-weight: 600; }}
td.other {{ color: #92400e; font-weight: 600; }}
</style>
</head>
<body>
<h1>blkrig reports</h1>
<p>{} run folder{}: {} passed, {} failed, {} other.</p>
<table>
<thead><tr><th>run</th><th>verdict</th><th>requests</th><th>folder</th></tr></thead>
<tbody>
{}</tbody>
</table>
</body>
</html>
)",
                                         entries.size(), entries.size() == 1 ? "" : "s",
                                         std::count_if(entries.begin(), entries.end(), [](const auto& e) { return e.outcome == "pass"; }),
                                         std::count_if(entries.begin(), entries.end(), [](const auto& e) { return e.outcome == "fail"; }),
                                         std::count_if(entries.begin(), entries.end(),
                                                       [](const auto& e) { return e.outcome != "pass" && e.outcome != "fail"; }),
                                         rows);
    write_atomically(out, html);
}

std::vector<fs::path> report(const std::vector<fs::path>& run_dirs, const fs::path& out, const Options& o) {
    if (run_dirs.empty()) throw ReportError(2, "no run folder given");
    // A `blkrig crash` folder has its own page (crash.json, no trace of its own).
    auto is_crash = [](const fs::path& d) { return fs::is_regular_file(d / "crash.json") && !fs::exists(d / "trace.bin"); };
    for (const auto& d : run_dirs)
        if (!is_crash(d)) check_run_dir(d);
    const Assets a = load_assets(o.web_dir);
    std::vector<fs::path> written;
    std::vector<IndexEntry> entries;
    for (const auto& d : run_dirs) {
        if (is_crash(d)) {
            if (const auto why = write_crash_report(d); !why.empty()) throw ReportError(2, fmt::format("{}: {}", d.string(), why));
            const json c = json::parse(read_text(d / "crash.json"), nullptr, false);
            const bool complete = c.is_object() && c.value("complete", false);
            entries.push_back({d, d / "crash.html", "crash " + (c.is_object() ? c.value("scenario", d.string()) : d.string()),
                               !complete ? "incomplete" : c.value("inconsistent", 0) ? "fail" : "pass", 0});
            written.push_back(entries.back().report);
            continue;
        }
        entries.push_back(write_one(d, run_dirs.size() == 1 ? out : fs::path(), a, o));
        written.push_back(entries.back().report);
    }
    if (run_dirs.size() > 1) {
        const fs::path index = out.empty() ? fs::path("index.html") : out;
        write_index(entries, index);
        written.push_back(index);
    }
    return written;
}

std::string write_run_report(const fs::path& run_dir, const model::Run* loaded) noexcept {
    try {
        const Options o;
        check_run_dir(run_dir);
        write_one(run_dir, {}, load_assets(o.web_dir), o, loaded);
        return "";
    } catch (const std::exception& e) {
        return e.what();
    }
}

}  // namespace blkrig::report
