#include "run/matrix.hpp"

#include "folder/run_folder.hpp"
#include "launch/process.hpp"
#include "run/build_cache.hpp"
#include "report/report.hpp"
#include "trace/format.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <poll.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

namespace blkrig::run {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

int rank(int code) {
    switch (code) {
    case 0: return 0;
    case 1: return 1;
    case 2: return 2;
    case 130: return 4;
    default: return 3;  // 3 and anything unexpected: the infrastructure
    }
}

std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Counts request records in a trace that is still being written, reading
// only what was added since the last call.
class TraceCounter {
public:
    explicit TraceCounter(fs::path p) : path_(std::move(p)) {}
    uint64_t count() {
        std::ifstream in(path_, std::ios::binary);
        if (!in) return requests_;
        if (offset_ == 0) {
            trace::FileHeader h{};
            if (!in.read(reinterpret_cast<char*>(&h), sizeof h) || std::memcmp(h.magic, trace::kMagic, sizeof h.magic) != 0) return requests_;
            offset_ = (sizeof h + h.config_json_len + 7) / 8 * 8;
        }
        in.seekg(static_cast<std::streamoff>(offset_));
        trace::RecordPrefix p{};
        while (in.read(reinterpret_cast<char*>(&p), sizeof p)) {
            if (p.length < sizeof p || p.length % 8) break;  // not ours to judge here: `blkrig trace` reports it
            in.seekg(static_cast<std::streamoff>(offset_ + p.length));
            if (!in || in.peek() == EOF) {
                // The record may be only partly written: count it once it is whole.
                in.clear();
                in.seekg(0, std::ios::end);
                if (static_cast<uint64_t>(in.tellg()) < offset_ + p.length) break;
            }
            if (p.kind == static_cast<uint16_t>(trace::RecordKind::request)) ++requests_;
            offset_ += p.length;
            in.seekg(static_cast<std::streamoff>(offset_));
        }
        return requests_;
    }

private:
    fs::path path_;
    uint64_t offset_ = 0;
    uint64_t requests_ = 0;
};

struct Running {
    size_t cell;
    launch::Child child;
    Clock::time_point started;
    TraceCounter trace;
};

// Where a running cell is, from the files its run writes.
std::string phase(const Cell& c) {
    std::error_code ec;
    if (!fs::exists(c.out / "console.log", ec)) return "building";
    const std::string results = read_text(c.out / "results.jsonl");
    if (results.find("\"hello\"") == std::string::npos) return "booting";
    if (results.find("\"done\"") != std::string::npos) return "checking";
    size_t done = 0;
    for (size_t pos = 0; (pos = results.find("\"type\":\"step\"", pos)) != std::string::npos; ++pos) ++done;
    return fmt::format("step {}/{}", std::min(done + 1, std::max<size_t>(c.steps, 1)), c.steps);
}

CellResult collect(const Cell& c, int exit_code, double seconds, uint64_t requests) {
    CellResult r;
    r.exit_code = exit_code;
    r.seconds = seconds;
    r.requests = requests;
    r.outcome = exit_code == 0 ? "pass" : exit_code == 1 ? "fail" : exit_code == 130 ? "interrupted" : "error";
    const auto v = json::parse(read_text(c.out / "verdict.json"), nullptr, false);
    if (v.is_object()) {
        for (const auto& p : v.value("problems", json::array())) r.problems.push_back(p.get<std::string>());
        // No trace (a run stopped before its device started) is null.
        if (const auto t = v.value("device_trace", json()); t.is_object()) r.requests = t.value("requests", r.requests);
    } else {
        // No verdict: the run stopped before one (bad input, or interrupted). Its own words are in run.log.
        std::istringstream log(launch::tail_lines((c.out / "run.log").string(), 8));
        for (std::string line; std::getline(log, line);)
            if (!line.empty() && line.rfind("blkrig: running ", 0) != 0) {
                if (line.rfind("blkrig: ", 0) == 0) line = line.substr(8);
                if (std::find(r.problems.begin(), r.problems.end(), line) == r.problems.end()) r.problems.push_back(line);
            }
        if (r.problems.empty()) r.problems.push_back(fmt::format("the run exited {} without a verdict", exit_code));
    }
    return r;
}

std::string xml_escape(std::string_view s) {
    std::string out;
    for (char ch : s) {
        const auto u = static_cast<unsigned char>(ch);
        switch (ch) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        default:
            // XML 1.0 allows no other control characters.
            if (u < 0x20 && ch != '\n' && ch != '\t' && ch != '\r') out += fmt::format("\\x{:02x}", u);
            else out += ch;
        }
    }
    return out;
}

void print_summary(const std::vector<Cell>& cells, const std::vector<CellResult>& results) {
    size_t wn = 8, wk = 6;
    for (const auto& c : cells) {
        wn = std::max(wn, c.name.size());
        wk = std::max(wk, c.kernel.size());
    }
    fmt::print("{:<{}}  {:<{}}  {:<11} {:>8} {:>9}  {}\n", "scenario", wn, "kernel", wk, "verdict", "seconds", "requests", "run folder");
    size_t counts[5] = {};
    for (size_t i = 0; i < cells.size(); ++i) {
        const auto& r = results[i];
        fmt::print("{:<{}}  {:<{}}  {:<11} {:>8.1f} {:>9}  {}\n", cells[i].name, wn, cells[i].kernel, wk, r.outcome, r.seconds, r.requests,
                   cells[i].out.string());
        if (r.outcome != "pass" && r.outcome != "skipped")
            for (const auto& p : r.problems) {
                std::string line = p.substr(0, p.find('\n'));
                fmt::print("    {}\n", line.size() > 200 ? line.substr(0, 200) + "..." : line);
            }
        const std::string& o = r.outcome;
        ++counts[o == "pass" ? 0 : o == "fail" ? 1 : o == "skipped" ? 3 : o == "interrupted" ? 4 : 2];
    }
    fmt::print("{} runs: {} passed, {} failed, {} errors, {} skipped{}\n", cells.size(), counts[0], counts[1], counts[2], counts[3],
               counts[4] ? fmt::format(", {} interrupted", counts[4]) : "");
}

// How long each scenario x kernel took last time (in the build cache's
// folder), so that the longest runs start first and the matrix does not end
// with one long run alone on an idle machine.
std::string duration_key(const Cell& c) { return CacheKey("duration").file(c.scenario_path).text(c.kernel).hex(); }

fs::path durations_file() {
    const fs::path d = build_cache_dir();
    return d.empty() ? fs::path() : d / "durations.json";
}

json load_durations() {
    const fs::path f = durations_file();
    if (f.empty()) return json::object();
    const auto j = json::parse(read_text(f), nullptr, false);
    return j.is_object() ? j : json::object();
}

void save_durations(const std::vector<Cell>& cells, const std::vector<CellResult>& results) {
    const fs::path f = durations_file();
    if (f.empty()) return;
    std::error_code ec;
    fs::create_directories(f.parent_path(), ec);
    // Several matrices may finish at once: read, merge and replace under a lock.
    const int lock = ::open((f.string() + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (lock < 0) return;
    ::flock(lock, LOCK_EX);
    json d = load_durations();
    for (size_t i = 0; i < cells.size(); ++i)
        if (results[i].outcome == "pass" || results[i].outcome == "fail") d[duration_key(cells[i])] = results[i].seconds;
    if (d.size() > 4096) d = json::object();  // forget everything rather than grow without bound
    const fs::path tmp = f.string() + fmt::format(".{}", ::getpid());
    std::ofstream(tmp) << d.dump() << "\n";
    fs::rename(tmp, f, ec);
    if (ec) fs::remove(tmp, ec);
    ::close(lock);
}

}  // namespace

int worst_exit(int a, int b) { return rank(b) > rank(a) ? b : a; }

std::string junit_xml(const std::vector<Cell>& cells, const std::vector<CellResult>& results) {
    size_t failures = 0, errors = 0, skipped = 0;
    double total = 0;
    for (const auto& r : results) {
        failures += r.outcome == "fail";
        errors += r.outcome == "error" || r.outcome == "interrupted";
        skipped += r.outcome == "skipped";
        total += r.seconds;
    }
    std::string x = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<testsuites>\n";
    x += fmt::format("  <testsuite name=\"blkrig\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3f}\">\n", cells.size(),
                     failures, errors, skipped, total);
    for (size_t i = 0; i < cells.size(); ++i) {
        const auto& c = cells[i];
        const auto& r = results[i];
        x += fmt::format("    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3f}\">\n", xml_escape(c.name),
                         xml_escape(c.name + " on " + c.kernel), r.seconds);
        x += "      <properties>\n";
        auto prop = [&](const std::string& n, const std::string& v) {
            x += fmt::format("        <property name=\"{}\" value=\"{}\"/>\n", xml_escape(n), xml_escape(v));
        };
        prop("run_dir", fs::absolute(c.out).string());
        prop("scenario", c.scenario_path);
        prop("kernel", c.kernel);
        prop("requests", std::to_string(r.requests));
        std::vector<std::string> failed;
        const auto v = json::parse(read_text(c.out / "verdict.json"), nullptr, false);
        if (r.outcome != "skipped" && v.is_object()) {
            for (const auto& s : v.value("steps", json::array())) {
                const std::string name = fmt::format("check: step {} {}", s.value("index", 0), s.value("op", ""));
                const bool ok = s.value("ok", false);
                prop(name, !s.value("ran", false) ? "did not run" : ok ? "pass" : "fail");
                if (s.value("ran", false) && !ok) {
                    std::string why;
                    for (const auto& ch : s.value("checks", json::array()))
                        if (!ch.value("ok", true))
                            why += fmt::format("{}{}: expected {}, got {}", why.empty() ? "" : "; ", ch.value("what", ""), ch["expected"].dump(),
                                               ch["got"].dump());
                    failed.push_back(name.substr(7) + ": " + why);
                }
            }
            for (const auto& e : v.value("expect", json::array())) {
                // "FILE:LINE" of the [[expect]] table, by the scenario file's name only.
                std::string where = e.value("where", "");
                if (where.rfind(c.scenario_path, 0) == 0) where = fs::path(c.scenario_path).filename().string() + where.substr(c.scenario_path.size());
                const std::string name = fmt::format("check: expect {} {}", where, e.value("property", ""));
                prop(name, e.value("ok", false) ? "pass" : "fail");
                if (!e.value("ok", false)) failed.push_back(name.substr(7) + ": " + e.value("message", ""));
            }
        }
        x += "      </properties>\n";
        if (r.outcome == "skipped") {
            x += fmt::format("      <skipped message=\"{}\"/>\n", xml_escape(r.problems.empty() ? "" : r.problems.front()));
        } else if (r.outcome == "fail") {
            if (failed.empty()) failed = r.problems;
            x += fmt::format("      <failure message=\"{}\">{}</failure>\n", xml_escape(failed.empty() ? "failed" : failed.front()),
                             xml_escape(fmt::format("{}", fmt::join(failed, "\n"))));
        } else if (r.outcome != "pass") {
            const std::string first = r.problems.empty() ? r.outcome : r.problems.front();
            x += fmt::format("      <error message=\"{}\">{}</error>\n", xml_escape(first.substr(0, first.find('\n'))),
                             xml_escape(fmt::format("{}", fmt::join(r.problems, "\n"))));
        }
        x += "    </testcase>\n";
    }
    x += "  </testsuite>\n</testsuites>\n";
    return x;
}

int run_matrix(const MatrixOptions& o) {
    const int sig_fd = launch::make_signal_fd();
    struct CloseFd {
        int fd;
        ~CloseFd() { ::close(fd); }
    } close_sig{sig_fd};

    const auto t0 = Clock::now();
    std::vector<CellResult> results(o.cells.size());
    std::vector<std::string> state(o.cells.size(), "queued");
    std::deque<size_t> queue;
    for (size_t i = 0; i < o.cells.size(); ++i) {
        if (o.cells[i].skip.empty()) {
            queue.push_back(i);
            continue;
        }
        results[i].exit_code = 0;
        results[i].outcome = "skipped";
        results[i].problems = {o.cells[i].skip};
        state[i] = "skipped";
        if (o.progress == MatrixOptions::Progress::lines)
            fmt::print(stderr, "blkrig: {} on {}: skipped ({})\n", o.cells[i].name, o.cells[i].kernel, o.cells[i].skip);
    }
    // Longest first, by last time's durations; runs never seen before first of all.
    {
        const json d = load_durations();
        std::vector<double> last(o.cells.size(), 1e9);
        for (size_t i : queue)
            if (auto it = d.find(duration_key(o.cells[i])); it != d.end() && it->is_number()) last[i] = it->get<double>();
        std::stable_sort(queue.begin(), queue.end(), [&](size_t a, size_t b) { return last[a] > last[b]; });
    }
    std::vector<std::unique_ptr<Running>> running;
    bool interrupted = false;
    size_t drawn = 0;  // lines of the last progress table
    const size_t total = queue.size();
    size_t finished = 0;

    auto draw = [&] {
        if (o.progress != MatrixOptions::Progress::tty) return;
        std::string s;
        if (drawn) s += fmt::format("\x1b[{}F", drawn);  // back to the table's first line
        const double el = std::chrono::duration<double>(Clock::now() - t0).count();
        s += fmt::format("\x1b[2Kblkrig: {} of {} runs done, {} running, {} queued, {:.0f} s\n", finished, total, running.size(), queue.size(), el);
        size_t lines = 1;
        for (size_t i = 0; i < o.cells.size(); ++i) {
            std::string st = state[i];
            for (const auto& r : running)
                if (r->cell == i)
                    st = fmt::format("{:<12} {:>7} requests {:>5.0f} s", phase(o.cells[i]), r->trace.count(),
                                     std::chrono::duration<double>(Clock::now() - r->started).count());
            s += fmt::format("\x1b[2K  {:<28} {:<22} {}\n", o.cells[i].name.substr(0, 28), o.cells[i].kernel.substr(0, 22), st);
            ++lines;
        }
        drawn = lines;
        std::fputs(s.c_str(), stderr);
        std::fflush(stderr);
    };

    auto finish = [&](Running& r, int code) {
        const auto& c = o.cells[r.cell];
        const double secs = std::chrono::duration<double>(Clock::now() - r.started).count();
        results[r.cell] = collect(c, code, secs, r.trace.count());
        state[r.cell] = fmt::format("{} ({:.1f} s, {} requests)", results[r.cell].outcome, secs, results[r.cell].requests);
        ++finished;
        if (o.progress == MatrixOptions::Progress::lines)
            fmt::print(stderr, "blkrig: [{}/{}] {} on {}: {} ({:.1f} s, {} requests) {}\n", finished, total, c.name, c.kernel,
                       results[r.cell].outcome, secs, results[r.cell].requests, c.out.string());
    };

    auto start = [&](size_t i) {
        const auto& c = o.cells[i];
        std::error_code ec;
        // Marked as a run folder, so the cell's run takes it (and its run.log) as ours.
        try {
            folder::mark_new(c.out, folder::Kind::run);
        } catch (const folder::FolderError& e) {
            results[i].exit_code = 3;
            results[i].outcome = "error";
            results[i].problems = {e.what()};
            state[i] = "error";
            ++finished;
            return;
        }
        std::vector<std::string> argv = {o.self.string(), "run", c.scenario_path, "--kernel", c.kernel, "--out", c.out.string()};
        argv.insert(argv.end(), o.run_args.begin(), o.run_args.end());
        auto r = std::make_unique<Running>(Running{i, launch::Child(), Clock::now(), TraceCounter(c.out / "trace.bin")});
        r->child = launch::Child(fmt::format("run {}", i), argv, (c.out / "run.log").string());
        state[i] = "running";
        running.push_back(std::move(r));
    };

    auto last_draw = Clock::now() - std::chrono::seconds(1);
    std::optional<Clock::time_point> stop_by;
    while (!queue.empty() || !running.empty()) {
        while (!interrupted && !queue.empty() && running.size() < std::max(o.jobs, 1u)) {
            start(queue.front());
            queue.pop_front();
        }
        if (interrupted && !queue.empty()) {
            for (size_t i : queue) {
                results[i].exit_code = 130;
                results[i].outcome = "interrupted";
                results[i].problems = {"not started: the matrix was interrupted"};
                state[i] = "interrupted";
            }
            queue.clear();
        }
        pollfd p{sig_fd, POLLIN, 0};
        if (::poll(&p, 1, 250) > 0) {
            signalfd_siginfo si{};
            while (::read(sig_fd, &si, sizeof si) == sizeof si) {
                const int sig = static_cast<int>(si.ssi_signo);
                if ((sig == SIGINT || sig == SIGTERM || sig == SIGHUP) && !interrupted) {
                    interrupted = true;
                    // Each run stops its guest and device and writes what it has.
                    for (auto& r : running) ::kill(r->child.pid(), SIGTERM);
                    if (o.progress != MatrixOptions::Progress::quiet)
                        fmt::print(stderr, "\nblkrig: interrupted: stopping {} run(s)\n", running.size());
                }
            }
        }
        for (auto it = running.begin(); it != running.end();) {
            if ((*it)->child.poll()) {
                const int st = *(*it)->child.status();
                const int code = WIFEXITED(st) ? WEXITSTATUS(st) : 130;
                finish(**it, interrupted && code != 0 && code != 1 ? 130 : code);
                it = running.erase(it);
            } else {
                ++it;
            }
        }
        if (Clock::now() - last_draw > std::chrono::milliseconds(500)) {
            draw();
            last_draw = Clock::now();
        }
        if (interrupted) {
            // A run that does not stop in time is killed (its children die with it).
            if (!stop_by) stop_by = Clock::now() + std::chrono::seconds(20);
            if (Clock::now() > *stop_by)
                for (auto& r : running) r->child.terminate(std::chrono::milliseconds(0));
        }
    }
    draw();

    save_durations(o.cells, results);
    int worst = 0;
    for (const auto& r : results) worst = worst_exit(worst, r.exit_code);
    if (interrupted) worst = 130;
    if (!o.junit.empty()) {
        // Whole or not at all; a symlink at that name is replaced, not written through.
        try {
            folder::write_atomic(o.junit, junit_xml(o.cells, results));
        } catch (const folder::FolderError& e) {
            fmt::print(stderr, "blkrig: cannot write --junit {}: {}\n", o.junit.string(), e.what());
            worst = worst_exit(worst, 2);
        }
    }
    if (!o.index.empty()) {
        // Each run wrote its own report.html; the index links them with their verdicts.
        std::vector<report::IndexEntry> entries;
        for (size_t i = 0; i < o.cells.size(); ++i) {
            const auto& c = o.cells[i];
            std::error_code ec;
            const fs::path page = c.out / "report.html";
            entries.push_back({c.out, fs::exists(page, ec) ? page : fs::path(), c.name + " on " + c.kernel, results[i].outcome,
                               static_cast<size_t>(results[i].requests)});
        }
        try {
            report::write_index(entries, o.index);
        } catch (const std::exception& e) {
            fmt::print(stderr, "blkrig: no report index: {}\n", e.what());
        }
    }
    print_summary(o.cells, results);
    if (!o.index.empty() && fs::exists(o.index)) fmt::print("report: {}\n", o.index.string());
    return worst;
}

}  // namespace blkrig::run
