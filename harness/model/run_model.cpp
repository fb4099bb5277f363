#include "model/run_model.hpp"
#include "common/ops.hpp"
#include "common/sectors.hpp"
#include "common/markers.hpp"

#include "model/correlate.hpp"
#include "model/trace_view.hpp"
#include "model/results.hpp"
#include "scenario/scenario.hpp"
#include "trace/reader.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <sstream>

namespace blkrig::model {

namespace fs = std::filesystem;
using nlohmann::json;

RunError::RunError(fs::path f, const std::string& what) : std::runtime_error(fmt::format("{}: {}", f.string(), what)), file(std::move(f)) {}

std::string Request::op() const { return trace::op_label(type); }

const char* op_name(GuestOp op) {
    switch (op) {
    case GuestOp::read: return "read";
    case GuestOp::write: return "write";
    case GuestOp::flush: return "flush";
    case GuestOp::discard: return "discard";
    case GuestOp::secure_erase: return "secure_erase";
    case GuestOp::other: return "other";
    case GuestOp::none: break;
    }
    return "none";
}

const Step* Run::step(int index) const {
    for (const auto& s : steps)
        if (s.index == index) return &s;
    return nullptr;
}

const Step* Run::agent_step(int agent_index) const {
    for (const auto& s : steps)
        if (s.agent_index == agent_index) return &s;
    return nullptr;
}

int Run::file_index(std::string_view path) const {
    for (size_t i = 0; i < files.size(); ++i)
        if (files[i].guest_path == path || files[i].path == path) return static_cast<int>(i);
    return -1;
}

const File* Run::file(std::string_view path) const {
    const int i = file_index(path);
    return i < 0 ? nullptr : &files[static_cast<size_t>(i)];
}

const Request* Run::by_seq(uint64_t seq) const {
    auto it = std::lower_bound(requests.begin(), requests.end(), seq, [](const Request& r, uint64_t s) { return r.seq < s; });
    return it != requests.end() && it->seq == seq ? &*it : nullptr;
}

const ExtentIndexEntry* extent_at(const Run& run, uint64_t sector) {
    const auto& x = run.extent_index;
    auto it = std::upper_bound(x.begin(), x.end(), sector, [](uint64_t s, const ExtentIndexEntry& e) { return s < e.sector; });
    if (it == x.begin()) return nullptr;
    --it;
    return sector < it->sector + it->sectors ? &*it : nullptr;
}

std::vector<json> Run::guest_json(size_t begin, size_t end) const {
    std::vector<json> out;
    end = std::min(end, guest.events.size());
    if (begin >= end) return out;
    const fs::path p = dir / "guest-events.jsonl";
    std::ifstream in(p, std::ios::binary);
    if (!in) throw RunError(p, "cannot be read any more");
    const uint64_t from = guest.events[begin].offset;
    uint64_t to;
    if (end < guest.events.size()) {
        to = guest.events[end].offset;
    } else {
        in.seekg(0, std::ios::end);
        to = static_cast<uint64_t>(in.tellg());
    }
    std::string buf(to - from, '\0');
    in.seekg(static_cast<std::streamoff>(from));
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::istringstream lines(buf);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.empty()) continue;
        auto j = json::parse(line, nullptr, false);
        if (j.is_object()) out.push_back(std::move(j));
    }
    return out;
}

namespace {

std::string read_text(const fs::path& p, const char* what) {
    std::error_code ec;
    if (!fs::exists(p, ec)) throw RunError(p, fmt::format("missing ({}); is this a run folder written by `blkrig run`?", what));
    std::ifstream in(p, std::ios::binary);
    if (!in) throw RunError(p, fmt::format("cannot be read: {}", std::strerror(errno)));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

json read_json(const fs::path& p, const char* what) {
    const std::string text = read_text(p, what);
    try {
        return json::parse(text);
    } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond a double
        throw RunError(p, fmt::format("not valid JSON: {}", e.what()));
    }
}

// A large file's bytes without copying them: mapped read-only.
class Mapped {
public:
    Mapped(const fs::path& p, const char* what) : path_(p) {
        fd_ = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd_ < 0) {
            if (errno == ENOENT) throw RunError(p, fmt::format("missing ({}); is this a run folder written by `blkrig run`?", what));
            throw RunError(p, fmt::format("cannot be read: {}", std::strerror(errno)));
        }
        struct stat st {};
        ::fstat(fd_, &st);
        size_ = static_cast<size_t>(st.st_size);
        if (size_) {
            data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
            if (data_ == MAP_FAILED) throw RunError(p, fmt::format("cannot be mapped: {}", std::strerror(errno)));
            ::madvise(data_, size_, MADV_SEQUENTIAL);
        }
    }
    ~Mapped() {
        if (data_ && data_ != MAP_FAILED) ::munmap(data_, size_);
        if (fd_ >= 0) ::close(fd_);
    }
    Mapped(const Mapped&) = delete;
    Mapped& operator=(const Mapped&) = delete;
    std::string_view text() const { return size_ ? std::string_view(static_cast<const char*>(data_), size_) : std::string_view(); }

private:
    fs::path path_;
    int fd_ = -1;
    void* data_ = nullptr;
    size_t size_ = 0;
};

template <typename T>
T field(const json& j, const char* key, const fs::path& file, const std::string& where) {
    auto it = j.find(key);
    if (it == j.end()) throw RunError(file, fmt::format("{} has no \"{}\"", where, key));
    try {
        return it->get<T>();
    } catch (const json::exception&) {
        throw RunError(file, fmt::format("{}.{} has the wrong type: {}", where, key, it->dump()));
    }
}

void load_run_json(Run& run) {
    const fs::path p = run.dir / "run.json";
    run.run_json = read_json(p, "what the guest agent ran");
    if (!run.run_json.is_object()) throw RunError(p, "not a JSON object");
    if (run.run_json.value("version", 0) != 1) throw RunError(p, fmt::format("version {} is not 1", run.run_json.value("version", json()).dump()));
    run.mountpoint = run.run_json.value("mountpoint", std::string("/mnt"));
    if (auto m = run.run_json.find("marker"); m != run.run_json.end() && m->is_object()) {
        run.marker_first_sector = field<uint64_t>(*m, "first_sector", p, "marker");
        run.marker_count = field<uint64_t>(*m, "count", p, "marker");
        run.marker_block_size = m->value("block_size", 512u);
        if (run.marker_block_size < 512 || run.marker_block_size % 512) throw RunError(p, fmt::format("marker.block_size {} is not a multiple of 512", run.marker_block_size));
    }
    const auto steps = run.run_json.find("steps");
    if (steps == run.run_json.end() || !steps->is_array()) throw RunError(p, "has no \"steps\" list");
    for (size_t i = 0; i < steps->size(); ++i) {
        const auto& a = (*steps)[i];
        if (!a.is_object()) throw RunError(p, fmt::format("steps[{}] is not an object", i));
        Step s;
        s.agent_index = static_cast<int>(i);
        s.index = static_cast<int>(i);
        s.op = field<std::string>(a, "op", p, fmt::format("steps[{}]", i));
        s.path = a.value("path", std::string());
        s.args = a;
        run.steps.push_back(std::move(s));
    }
}

// With the scenario, steps carry the scenario's numbers. The agent runs
// exactly the scenario's steps; run folders of older versions also hold a
// FIEMAP step per file after the first mount, numbered -1 here.
void number_steps(Run& run) {
    const fs::path p = run.dir / "scenario.toml";
    std::error_code ec;
    if (!fs::exists(p, ec)) return;
    scenario::Scenario sc;
    try {
        sc = scenario::load_scenario(p.string());
    } catch (const scenario::ScenarioError& e) {
        throw RunError(p, fmt::format("cannot be parsed: {}", e.what()));
    }
    size_t next = 0;
    for (size_t i = 0; i < run.steps.size(); ++i) {
        if (next < sc.steps.size() && sc.steps[next].op == run.steps[i].op) {
            run.steps[i].index = static_cast<int>(next++);
        } else if (run.steps[i].op == "fiemap") {
            run.steps[i].index = -1;
        } else {
            throw RunError(p, fmt::format("does not match run.json: agent step {} is '{}' in run.json but the scenario's step {} is '{}'", i,
                                          run.steps[i].op, next, next < sc.steps.size() ? sc.steps[next].op : std::string("(none)")));
        }
    }
    if (next != sc.steps.size())
        throw RunError(p, fmt::format("does not match run.json: the scenario has {} steps, run.json {}", sc.steps.size(), next));
}

}  // namespace

std::vector<int32_t> queue_of_cpu(const json& sysfs) {
    std::vector<int32_t> map;
    if (!sysfs.is_object()) return map;
    for (const auto& [key, value] : sysfs.items()) {
        // "mq/<queue>/cpu_list": "0-1,4"
        unsigned q = 0;
        char tail[16] = {};
        if (std::sscanf(key.c_str(), "mq/%u/%15s", &q, tail) != 2 || std::string_view(tail) != "cpu_list" || !value.is_string()) continue;
        std::istringstream in(value.get<std::string>());
        std::string part;
        while (std::getline(in, part, ',')) {
            unsigned lo = 0, hi = 0;
            const int n = std::sscanf(part.c_str(), "%u-%u", &lo, &hi);
            if (n < 1) continue;
            if (n == 1) hi = lo;
            for (unsigned c = lo; c <= hi && c < 4096; ++c) {
                if (map.size() <= c) map.resize(c + 1, -1);
                map[c] = static_cast<int32_t>(q);
            }
        }
    }
    return map;
}

namespace {

void load_results(Run& run) {
    const fs::path p = run.dir / "results.jsonl";
    auto res = parse_results(read_text(p, "the guest agent's step results"));
    for (const auto& problem : res.problems) run.findings.push_back(fmt::format("results.jsonl {}", problem));
    if (res.hello.is_object() && res.hello.contains("sysfs")) run.queue_of_cpu = queue_of_cpu(res.hello["sysfs"]);
    for (auto& r : res.steps) {
        if (r.index >= run.steps.size())
            throw RunError(p, fmt::format("line {}: step index {} but run.json has {} steps", r.line, r.index, run.steps.size()));
        auto& s = run.steps[r.index];
        const json& j = r.record;
        s.ran = true;
        s.ret = j.value("ret", int64_t{-1});
        s.ok = s.ret == 0;
        s.errno_value = j.value("errno", int64_t{0});
        s.error = j.value("error", std::string());
        s.call = j.value("call", std::string());
        s.bytes = j.value("bytes", uint64_t{0});
        s.marker_begin = j.value("marker_begin", int64_t{-1});
        s.marker_end = j.value("marker_end", int64_t{-1});
        s.result = std::move(r.record);
    }
}

void load_trace(Run& run, const LoadOptions& opts) {
    const fs::path p = run.dir / "trace.bin";
    trace::Trace t;
    {
        // Mapped, not streamed: a million requests are 70 MB.
        Mapped m(p, "the device trace");
        const auto text = m.text();
        try {
            t = trace::parse_trace(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
        } catch (const trace::ReadError& e) {
            throw RunError(p, e.what());
        }
    }
    if (!t.truncation.empty()) {
        if (!opts.allow_truncated_trace) throw RunError(p, fmt::format("the trace is cut short: {}", t.truncation));
        run.findings.push_back(fmt::format("the device trace is cut short ({}): only the records before the cut are known", t.truncation));
    } else if (const auto why = t.incompleteness(); !why.empty()) {
        run.findings.push_back(fmt::format("the device trace is incomplete: {}", why));
    }
    run.trace_incomplete = t.incompleteness();
    for (const auto& b : t.bad) {
        run.trace_bad.push_back(b.describe());
        run.findings.push_back(fmt::format("the device trace has an impossible record, left out of the model: {}", b.describe()));
    }
    run.trace_header = t.header;
    run.requests.reserve(t.requests.size());
    for (auto& r : t.requests) run.requests.emplace_back(std::move(r));
    // The file is in completion order; the model is in arrival order.
    auto by_seq = [](const Request& a, const Request& b) { return a.seq < b.seq; };
    if (!std::is_sorted(run.requests.begin(), run.requests.end(), by_seq)) std::sort(run.requests.begin(), run.requests.end(), by_seq);
    for (const auto& f : t.faults) {
        auto it = std::lower_bound(run.requests.begin(), run.requests.end(), f.seq, [](const Request& r, uint64_t s) { return r.seq < s; });
        if (it == run.requests.end() || it->seq != f.seq) {
            run.findings.push_back(fmt::format("the device trace has a fault record (rule {}) for seq {}, which has no request record", f.rule_id, f.seq));
            continue;
        }
        // A delay and an error can both fire; the error is what the guest saw.
        const bool delay = f.action == ops::action_code("delay");
        if (it->fault_action == 0 || !delay) {
            it->fault_rule = f.rule_id;
            it->fault_action = f.action;
        }
        if (delay) it->fault_delay_ns += f.delay_ns;
    }
    for (const auto& m : t.markers) run.markers.push_back({m.seq, m.t_ns, m.index});
    {
        // Each seq completes once, across device restarts too (a request in
        // flight at a crash is resubmitted under its seq).
        Summary acc;
        account_seqs(t, acc);
        if (acc.seq_duplicate_count)
            run.findings.push_back(fmt::format("the device trace has {} seq(s) with more than one record (a request completed twice?), e.g. {}",
                                               acc.seq_duplicate_count, fmt::join(acc.seq_duplicates, ", ")));
        if (acc.seq_missing_count && t.dropped_total() == 0)
            run.findings.push_back(fmt::format("the device trace has no record for {} seq(s) below its highest (requests fetched and never "
                                               "completed), e.g. {}",
                                               acc.seq_missing_count, fmt::join(acc.seq_missing, ", ")));
    }
    std::sort(run.markers.begin(), run.markers.end(), [](const Marker& a, const Marker& b) { return a.seq < b.seq; });
    // Segments: which markers a request sits between.
    size_t mi = 0;
    int32_t seg = 0;
    for (auto& r : run.requests) {
        while (mi < run.markers.size() && run.markers[mi].seq < r.seq) seg = static_cast<int32_t>(run.markers[mi++].index) + 1;
        r.segment = seg;
    }
}

void place_steps(Run& run) {
    std::map<uint32_t, const Marker*> by_index;
    for (const auto& m : run.markers) by_index.emplace(m.index, &m);
    for (size_t i = 0; i < run.steps.size(); ++i) {
        auto& s = run.steps[i];
        const int64_t mb = markers::begin_of(s.marker_begin, s.agent_index);
        const int64_t me = markers::end_of(s.marker_end, s.agent_index);
        const auto b = by_index.find(static_cast<uint32_t>(mb));
        const auto e = by_index.find(static_cast<uint32_t>(me));
        if (b == by_index.end() || e == by_index.end() || e->second->seq < b->second->seq) {
            if (s.ran && run.marker_first_sector)
                run.findings.push_back(fmt::format("{} ({}): marker {} is not in the device trace; its requests cannot be placed",
                                                   s.index >= 0 ? fmt::format("step {}", s.index) : fmt::format("agent step {}", s.agent_index), s.op,
                                                   b == by_index.end() ? mb : me));
            continue;
        }
        s.bracketed = true;
        s.first_seq = static_cast<int64_t>(b->second->seq) + 1;
        s.last_seq = static_cast<int64_t>(e->second->seq) - 1;
        auto lo = std::lower_bound(run.requests.begin(), run.requests.end(), b->second->seq + 1, [](const Request& r, uint64_t q) { return r.seq < q; });
        auto hi = std::lower_bound(lo, run.requests.end(), e->second->seq, [](const Request& r, uint64_t q) { return r.seq < q; });
        s.req_begin = static_cast<size_t>(lo - run.requests.begin());
        s.req_end = static_cast<size_t>(hi - run.requests.begin());
        for (auto it = lo; it != hi; ++it) it->step = static_cast<int32_t>(i);
    }
}

void load_extents(Run& run) {
    const fs::path p = run.dir / "extents.json";
    const json j = read_json(p, "the image's file to sector map");
    const auto files = j.find("files");
    if (!j.is_object() || files == j.end() || !files->is_array()) throw RunError(p, "has no \"files\" list");
    for (size_t i = 0; i < files->size(); ++i) {
        const auto& f = (*files)[i];
        const std::string where = fmt::format("files[{}]", i);
        File file;
        file.path = field<std::string>(f, "path", p, where);
        file.guest_path = run.mountpoint + file.path;
        file.size = field<uint64_t>(f, "size_bytes", p, where);
        const auto ex = f.find("extents");
        if (ex == f.end() || !ex->is_array()) throw RunError(p, fmt::format("{} ({}) has no \"extents\" list", where, file.path));
        for (size_t k = 0; k < ex->size(); ++k) {
            const std::string w = fmt::format("{}.extents[{}]", where, k);
            file.extents.push_back({field<uint64_t>((*ex)[k], "file_offset", p, w), field<uint64_t>((*ex)[k], "sector", p, w),
                                    field<uint64_t>((*ex)[k], "sectors", p, w)});
        }
        std::sort(file.extents.begin(), file.extents.end(), [](const Extent& a, const Extent& b) { return a.file_offset < b.file_offset; });
        for (size_t k = 0; k < file.extents.size(); ++k) {
            const auto& e = file.extents[k];
            run.extent_index.push_back({e.sector, e.sectors, e.file_offset, static_cast<uint32_t>(run.files.size()), static_cast<uint32_t>(k)});
        }
        run.files.push_back(std::move(file));
    }
    std::sort(run.extent_index.begin(), run.extent_index.end(), [](const auto& a, const auto& b) { return a.sector < b.sector; });
    for (size_t i = 1; i < run.extent_index.size(); ++i) {
        const auto& a = run.extent_index[i - 1];
        const auto& b = run.extent_index[i];
        if (a.sector + a.sectors > b.sector)
            throw RunError(p, fmt::format("extents of {} and {} overlap at sector {}", run.files[a.file].path, run.files[b.file].path, b.sector));
    }
    // Each request's first byte of file data.
    for (auto& r : run.requests) {
        if (!r.is_data() || r.bytes == 0) continue;
        const auto& x = run.extent_index;
        auto it = std::upper_bound(x.begin(), x.end(), r.sector, [](uint64_t s, const ExtentIndexEntry& e) { return s < e.sector; });
        if (it != x.begin() && std::prev(it)->sector + std::prev(it)->sectors > r.sector) --it;
        if (it == x.end() || it->sector >= r.end_sector()) continue;
        const uint64_t first = std::max(r.sector, it->sector);
        r.file = static_cast<int32_t>(it->file);
        r.file_offset = it->file_offset + sectors::to_bytes(first - it->sector);
    }
}

// ftrace's header says how many events the buffer held against how many
// were written: fewer held means the ring buffer overran and lost the oldest.
void check_ftrace_header(Run& run) {
    const fs::path p = run.dir / "events.txt";
    std::ifstream in(p);
    if (!in) return;
    std::string line;
    for (int i = 0; i < 20 && std::getline(in, line); ++i) {
        const auto k = line.find("entries-in-buffer/entries-written:");
        if (k == std::string::npos) continue;
        unsigned long long held = 0, written = 0;
        if (std::sscanf(line.c_str() + k, "entries-in-buffer/entries-written: %llu/%llu", &held, &written) == 2 && held < written)
            run.findings.push_back(fmt::format("the guest trace is incomplete: ftrace's buffer held {} of {} events written (it overran and lost the "
                                               "oldest); unmatched requests below may be artefacts of that. Give it more room: [guest] trace_buffer (docs/scenarios.md).",
                                               held, written));
        return;
    }
}

void report_guest(Run& run) {
    if (run.guest.bad_line_count) {
        std::string s = fmt::format("guest-events.jsonl: {} lines are not JSON objects and were skipped", run.guest.bad_line_count);
        for (const auto& [line, why] : run.guest.bad_lines) s += fmt::format("; line {}: {}", line, why);
        run.findings.push_back(s);
    }
    if (run.guest.lost_events || run.guest.lost_unknown)
        run.findings.push_back(fmt::format("the guest trace is incomplete: ftrace reports {} lost events (ring buffer overrun); unmatched requests "
                                           "below may be artefacts of that",
                                           run.guest.lost_unknown ? std::string("some") : std::to_string(run.guest.lost_events)));
    if (run.guest.events.empty()) run.findings.push_back("guest-events.jsonl is empty: no guest trace to correlate the device requests with");
}

}  // namespace

Run load_run(const fs::path& dir, const LoadOptions& opts) {
    Run run;
    run.dir = dir;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw RunError(dir, "is not a folder (give the run folder `blkrig run --out` wrote)");
    using Clock = std::chrono::steady_clock;
    auto t = Clock::now();
    auto lap = [&](double LoadTimings::*field) {
        const auto now = Clock::now();
        if (opts.timings) (*opts.timings).*field = std::chrono::duration<double>(now - t).count();
        t = now;
    };
    load_run_json(run);
    number_steps(run);
    load_results(run);
    lap(&LoadTimings::steps);
    // guest-events.jsonl is the largest file. It is parsed on a second
    // thread while this one reads the trace and the extents; a large one is
    // split at a line boundary and its second half parsed here afterwards.
    const Mapped guest_file(run.dir / "guest-events.jsonl", "the guest's ftrace as JSON lines");
    const std::string_view guest_text = guest_file.text();
    size_t split = guest_text.size();
    if (guest_text.size() > (8u << 20)) {
        // This thread also reads the trace, at about twice the cost per byte
        // of guest events: the other thread takes the larger share.
        std::error_code ec;
        const uint64_t trace_bytes = fs::file_size(run.dir / "trace.bin", ec);
        const uint64_t head = std::min<uint64_t>(guest_text.size(), (guest_text.size() + 2 * (ec ? 0 : trace_bytes)) / 2);
        split = guest_text.find('\n', head);
        split = split == std::string_view::npos ? guest_text.size() : split + 1;
    }
    const std::string_view guest_rest = guest_text.substr(split);
    const uint64_t guest_rest_offset = split;
    // Declared after guest_file: destroyed (joined) before the mapping goes.
    std::future<GuestEvents> guest_first =
        std::async(std::launch::async, [head = guest_text.substr(0, split), all = guest_text.size()] {
            return parse_guest_events(head, 0, all);  // room for the rest, appended later
        });
    load_trace(run, opts);
    place_steps(run);
    lap(&LoadTimings::trace);
    load_extents(run);
    lap(&LoadTimings::extents);
    check_ftrace_header(run);
    // The second part, if there was a split, is parsed here meanwhile, then
    // appended to the first (its line numbers continue the first's).
    GuestEvents rest = guest_rest.empty() ? GuestEvents() : parse_guest_events(guest_rest, guest_rest_offset);
    run.guest = guest_first.get();
    if (!guest_rest.empty()) append(run.guest, std::move(rest));
    report_guest(run);
    lap(&LoadTimings::guest);
    correlate(run);
    lap(&LoadTimings::correlate);
    return run;
}

}  // namespace blkrig::model
