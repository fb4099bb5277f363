#include "run/run.hpp"
#include "common/sectors.hpp"
#include "common/markers.hpp"

#include "run/fs_driver.hpp"

#include "checks/expect.hpp"
#include "checks/steps.hpp"
#include "folder/run_folder.hpp"
#include "launch/boot.hpp"
#include "launch/process.hpp"
#include "run/build_cache.hpp"
#include "run/extent_memo.hpp"
#include "run/filter_hint.hpp"
#include "run/initramfs.hpp"
#include "run/knobs.hpp"
#include "model/ftrace.hpp"
#include "model/results.hpp"
#include "model/run_model.hpp"
#include "model/trace_view.hpp"
#include "report/report.hpp"
#include "trace/reader.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <sstream>

namespace blkrig::run {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Block events and mpage functions the agent traces (../shared/MPAGE.md):
// names missing from a kernel are skipped by the agent and listed in hello.
const std::vector<std::string> kEvents = {
    "block/block_bio_queue", "block/block_bio_backmerge", "block/block_bio_frontmerge", "block/block_getrq",
    "block/block_rq_issue",  "block/block_rq_complete",   "block/block_split",          "block/block_plug",
    "block/block_unplug"};
const std::vector<std::string> kFunctions = {
    "mpage_readahead",      "mpage_read_folio",       "do_mpage_readpage", "__mpage_writepage", "mpage_writepages",
    "mpage_end_io",         "mpage_read_end_io",      "mpage_write_end_io", "mpage_submit_folio", "block_read_full_folio",
    "block_write_full_folio", "block_write_full_page", "ext4_mpage_readpages"};

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The module of the I/O scheduler asked for, when the kernel has it as a
// module (mq-deadline is one in the trixie cloud kernel): without it in the
// initramfs the scheduler cannot be selected. Built-in or unknown: none.
std::vector<std::string> scheduler_modules(const scenario::GuestKnobs& g, const fs::path& kernel_dir) {
    const auto it = g.queue.find("scheduler");
    if (it == g.queue.end()) return {};
    static const std::map<std::string, std::string> module_of = {{"mq-deadline", "mq-deadline"}, {"kyber", "kyber-iosched"}, {"bfq", "bfq"}};
    const auto m = module_of.find(it->second);
    if (m == module_of.end()) return {};
    const std::string dep = read_file(kernel_dir / "modules" / "modules.dep");
    if (dep.find("/" + m->second + ".ko") == std::string::npos) return {};
    return {m->second};
}

// Every artifact appears whole or not at all, never through a symlink.
void write_file(const fs::path& p, const std::string& s) { folder::write_atomic(p, s); }

RunResult fail_with(Outcome o, std::string what) {
    RunResult r;
    r.outcome = o;
    r.summary = what;
    r.problems.push_back(std::move(what));
    return r;
}

// A program name as the shell would find it (mkinitramfs looks it up on PATH).
fs::path on_path(const std::string& name) {
    if (name.find('/') != std::string::npos) return name;
    const char* path = std::getenv("PATH");
    std::string_view rest = path ? path : "/usr/bin:/bin";
    while (!rest.empty()) {
        const auto colon = rest.find(':');
        const fs::path cand = fs::path(std::string(rest.substr(0, colon))) / name;
        if (::access(cand.c_str(), X_OK) == 0) return cand;
        rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
    return name;
}

// Builds disk.img and extents.json in out; nullopt when fine.
// cache_note gets "disk": hit | built | uncached (the build cache).
// disk_key: the build cache's key of the image; left empty for --disk-from.
std::optional<RunResult> build_disk(const scenario::Scenario& sc, const RunOptions& o, const fs::path& out, json* cache_note = nullptr,
                                    std::string* disk_key = nullptr) {
    if (!o.disk_from.empty()) {
        for (const char* f : {"disk.img", "extents.json"}) {
            try {
                folder::copy_new(o.disk_from / f, out / f);
            } catch (const folder::FolderError& e) {
                return fail_with(Outcome::bad_input, fmt::format("--disk-from {}: cannot copy {}: {}", o.disk_from.string(), f, e.what()));
            }
        }
        return std::nullopt;
    }
    const std::string spec = scenario::disk_json(sc.disk).dump(2);
    write_file(out / "disk-spec.json", spec);
    std::optional<RunResult> bad;
    // The real mkfs tools the builder runs are inputs too: a Debian update of one makes new disks.
    CacheKey key("disk");
    key.text(spec).file(o.tools.mkdisk);
    for (const char* tool : {"mkfs.vfat", "mcopy", "mmd", "mkfs.exfat", "mke2fs", "debugfs"}) key.stamp(on_path(tool));
    if (disk_key) *disk_key = key.hex();
    const auto c = cached_build(key, {"disk.img", "extents.json"}, out,
                                [&](const fs::path& dir) -> std::optional<std::string> {
                                    auto mk = launch::run_tool({o.tools.mkdisk.string(), (out / "disk-spec.json").string(), "--out",
                                                                (dir / "disk.img").string(), "--extents", (dir / "extents.json").string()},
                                                               std::chrono::seconds(300));
                                    if (mk.exit_code == 2)
                                        bad = fail_with(Outcome::bad_input, fmt::format("{}: the disk cannot be built: {}", sc.file, mk.output));
                                    else if (mk.exit_code != 0)
                                        bad = fail_with(Outcome::infra, fmt::format("building the disk failed: {}", mk.output));
                                    return bad ? std::optional<std::string>(bad->summary) : std::nullopt;
                                });
    if (cache_note) (*cache_note)["disk"] = c.how;
    if (bad) return bad;
    if (c.error) return fail_with(Outcome::infra, *c.error);
    return std::nullopt;
}

// The modules an initramfs gets: `base`, the filesystem's, the scheduler's.
std::vector<std::string> initramfs_modules(const scenario::Scenario& sc, const RunOptions& o, const FsDriver& fsd,
                                           std::vector<std::string> modules) {
    for (const auto& m : fsd.modules) modules.push_back(m);
    for (const auto& m : scheduler_modules(sc.guest, o.kernel_dir)) modules.push_back(m);
    return modules;
}

// The agent's initramfs modules (the vm command's shell adds none of its own).
const std::vector<std::string> kAgentModules = {"virtio_pci", "virtio_blk", "virtio_console"};

// The vm command's shell needs busybox; the agent runs no program.
enum class Busybox { no, yes };

// Builds initrd.cpio in out, uncompressed (docs/performance.md): init as
// /init, the modules and the filesystem driver's, guest.programs, from the
// build cache; then appends files, the run's own, as a second archive
// (run/initramfs.hpp).
std::optional<RunResult> build_initramfs(const scenario::Scenario& sc, const RunOptions& o, const fs::path& out, const fs::path& init,
                                         const std::vector<InitramfsFile>& files, const std::vector<std::string>& modules,
                                         Busybox busybox, json* cache_note = nullptr) {
    std::vector<std::string> mi = {o.tools.mkinitramfs.string(), "--kernel-dir", o.kernel_dir.string(), "--init", init.string(),
                                   "--out", (out / "initrd.cpio").string(), "--compress", "none"};
    if (busybox == Busybox::no) mi.push_back("--no-busybox");
    for (const auto& p : sc.guest.programs) mi.insert(mi.end(), {"--program", p});
    for (const auto& m : modules) mi.insert(mi.end(), {"--module", m});
    // The key: every input mkinitramfs reads (the argv names the rest).
    CacheKey key("initramfs");
    // The output's path differs from run to run.
    for (auto a : mi) key.text(a == (out / "initrd.cpio").string() ? std::string("RUN_DIR/initrd.cpio") : a);
    key.file(o.tools.mkinitramfs).file(init).file(o.kernel_dir / "release").file(o.kernel_dir / "modules" / "modules.dep")
        .stamp(o.kernel_dir / "modules" / "modules.dep");
    for (const auto& p : sc.guest.programs) key.stamp(on_path(p));
    launch::ToolResult ir;
    const auto c = cached_build(key, {"initrd.cpio"}, out, [&](const fs::path& dir) -> std::optional<std::string> {
        auto argv = mi;
        for (auto& a : argv)
            if (a == (out / "initrd.cpio").string()) a = (dir / "initrd.cpio").string();
        ir = launch::run_tool(argv, std::chrono::seconds(120));
        return ir.exit_code == 0 ? std::nullopt : std::optional<std::string>(ir.output);
    });
    if (cache_note) (*cache_note)["initramfs"] = c.how;
    if (!c.error) {
        if (auto bad = append_to_initramfs(out / "initrd.cpio", files))
            return fail_with(Outcome::infra, fmt::format("{}: adding the run's own files to the initramfs: {}", sc.file, *bad));
        return std::nullopt;
    }
    if (ir.exit_code == 0) return fail_with(Outcome::infra, *c.error);  // the copy out of the cache failed
    const bool no_module = ir.output.find("not found in kernel") != std::string::npos;
    const bool no_program = ir.output.find("--program") != std::string::npos;
    if (no_module)
        return fail_with(Outcome::bad_input,
                         fmt::format("{}:{}: disk.fs = \"{}\" needs a module that kernel {} does not have; pick a kernel with it "
                                     "(blkrig kernel list) or another fs. {}",
                                     sc.file, std::max(sc.disk.fs_line, 1), sc.disk.fs, o.kernel_name, ir.output));
    return fail_with(no_program ? Outcome::bad_input : Outcome::infra,
                     fmt::format("{}: the initramfs for kernel {} cannot be built{}: {}", sc.file, o.kernel_name,
                                 no_program ? " (guest.programs names a program this host lacks)" : "", ir.output));
}

// The device and VM settings a scenario asks for.
launch::BootSpec boot_spec(const scenario::Scenario& sc, const RunOptions& o, const fs::path& out) {
    launch::BootSpec b;
    b.kernel = o.kernel_dir / "vmlinuz";
    b.initrd = out / "initrd.cpio";
    b.disk = out / "disk.img";
    b.out_dir = out;
    b.memory_mb = sc.guest.memory_mb;
    b.num_queues = sc.device.num_queues;
    b.queue_size = sc.device.queue_size;
    b.timeout_s = o.timeout_s ? o.timeout_s : sc.timeout_s;
    b.device = o.tools.device;
    b.launcher = o.launcher;
    b.libvirt_uri = o.libvirt_uri;
    b.device_args = {"--marker-sectors",     std::to_string(kMarkerSectors), "--seg-max", std::to_string(sc.device.seg_max),
                     "--queue-size",         std::to_string(std::max<unsigned>(sc.device.queue_size, 256)),
                     "--logical-block-size", std::to_string(sc.device.logical_block_size),
                     "--write-cache",        sc.device.write_cache ? "on" : "off"};
    if (sc.device.size_max) b.device_args.insert(b.device_args.end(), {"--size-max", std::to_string(sc.device.size_max)});
    if (sc.device.read_only) b.device_args.push_back("--read-only");
    b.restart_on_crash = sc.device.restart_on_crash;
    return b;
}

json to_json(const FsDriver& d) { return {{"fstype", d.fstype}, {"driver", d.driver}, {"modules", d.modules}, {"why", d.why}}; }

// Every problem the agent's work before step 0 shows starts so: the rig,
// not the scenario, failed (exit 3).
constexpr const char* kBeforeStepsProblem = "before the steps: ";

// The agent's before_steps record: the guest's FIEMAP (bytes) must equal the
// builder's extents (sectors), and the disk's cache must have been emptied.
std::vector<std::string> check_before_steps(const json& before, bool extent_check, const json& extents) {
    std::vector<std::string> problems;
    auto problem = [&](const std::string& what) { problems.push_back(kBeforeStepsProblem + what); };
    if (!before.is_object()) {
        problem("the agent sent no before_steps record");
        return problems;
    }
    const json cache = before.value("disk_cache", json::object());
    if (!cache.value("error", std::string()).empty())
        problem(fmt::format("the disk's page cache could not be emptied: {}", cache.value("error", std::string())));
    else if (cache.value("resident_after", uint64_t{1}) != 0)
        problem(fmt::format("{} pages of the disk were still cached after dropping the cache", cache.value("resident_after", uint64_t{1})));
    else if (cache.value("buffers_kb_after", int64_t{-1}) != 0)
        problem(fmt::format("the guest's block device cache held {} kB after dropping the cache (/proc/meminfo Buffers; -1: unreadable)",
                            cache.value("buffers_kb_after", int64_t{-1})));
    // The agent expedites RCU for its own set-up only (docs/agent-protocol.md).
    if (const json rcu = before.value("rcu_expedited", json()); rcu.is_object() && rcu.value("before", "") != rcu.value("after", ""))
        problem(fmt::format("/sys/kernel/rcu_expedited reads {} at step 0, not the kernel's own {}", rcu.value("after", "\"\""),
                            rcu.value("before", "\"\"")));
    const json check = before.value("extent_check", json());
    if (!extent_check) return problems;
    if (!check.is_object()) {
        problem("the extent check was asked for and did not run");
        return problems;
    }
    if (!check.value("error", std::string()).empty()) {
        problem(fmt::format("the extent check failed: {}", check.value("error", std::string())));
        return problems;
    }
    const json got_files = check.value("files", json::array());
    for (const auto& want_file : extents.value("files", json::array())) {
        const std::string path = want_file.value("path", "");
        const json* got_file = nullptr;
        for (const auto& g : got_files)
            if (g.value("path", "") == path) got_file = &g;
        if (!got_file) {
            problem(fmt::format("the extent check did not map {}", path));
            continue;
        }
        if (got_file->value("ret", -1) != 0) {
            problem(fmt::format("FIEMAP of {} failed in the guest: {} {}", path, got_file->value("call", std::string()),
                                got_file->value("error", std::string("?"))));
            continue;
        }
        json got = json::array();
        for (const auto& e : got_file->value("extents", json::array()))
            got.push_back({{"file_offset", e.value("logical", 0ull)}, {"sector", sectors::of_offset(e.value("physical", 0ull))},
                           {"sectors", sectors::covering(e.value("length", 0ull))}});
        json want = json::array();
        for (const auto& e : want_file.value("extents", json::array()))
            want.push_back({{"file_offset", e.value("file_offset", 0ull)}, {"sector", e.value("sector", 0ull)}, {"sectors", e.value("sectors", 0ull)}});
        if (got != want)
            problem(fmt::format("extents of {} disagree: the image says {}, the guest kernel says {}", path, want.dump(), got.dump()));
    }
    return problems;
}

// The knobs as the guest read them back, against the scenario; writes
// guest-knobs.json. results: the scenario's step results by index.
KnobReport check_guest_knobs(const scenario::Scenario& sc, const json& hello, const std::map<size_t, json>& results, const fs::path& out) {
    json mount;
    for (const auto& [i, res] : results)
        if (i < sc.steps.size() && sc.steps[i].op == "mount") {
            mount = res;
            break;
        }
    KnobReport k = check_knobs(sc, hello, mount);
    write_file(out / "guest-knobs.json", to_json(k, hello).dump(2) + "\n");
    return k;
}

// The step results the agent sent so far, by index; hello and done aside.
std::map<size_t, json> step_results(const scenario::Scenario& sc, const fs::path& out, json* hello = nullptr) {
    std::map<size_t, json> results;
    std::istringstream in(read_file(out / "results.jsonl"));
    for (std::string line; std::getline(in, line);) {
        const auto j = json::parse(line, nullptr, false);
        if (!j.is_object()) continue;
        const std::string type = j.value("type", "");
        if (type == "hello" && hello) *hello = j;
        if (type != "step") continue;
        const size_t idx = j.value("index", SIZE_MAX);
        if (idx < sc.steps.size()) results[idx] = j;
    }
    return results;
}

// A run stopped by SIGINT, SIGTERM or SIGHUP: everything it started is
// stopped, and verdict.json still says what it had (outcome interrupted,
// exit code 130): where it was, the steps the guest finished, the device
// trace so far. phase: empty when the guest was up (then told by the results).
// Where a run's time went (verdict.json "phases", seconds): build (the disk,
// the initramfs and all before the boot), boot (to the agent's hello as the
// host saw it on the results port), steps (hello to done: the steps, and the
// guest trace's copy), shutdown (done to QEMU and the device gone) and checks
// (after the boot to the verdict). null where the guest never said hello or
// done.
json phase_times(const launch::BootResult& br, std::chrono::steady_clock::time_point t_run, std::chrono::steady_clock::time_point t_boot,
                 std::chrono::steady_clock::time_point t_booted) {
    const auto secs = [](auto d) { return std::chrono::duration<double>(d).count(); };
    const auto now = std::chrono::steady_clock::now();
    const json unknown = nullptr;
    return {{"build_s", secs(t_boot - t_run)},
            {"boot_s", br.hello_s ? json(*br.hello_s) : unknown},
            {"steps_s", br.hello_s && br.done_s ? json(*br.done_s - *br.hello_s) : unknown},
            {"shutdown_s", br.done_s ? json(br.seconds - *br.done_s) : unknown},
            {"checks_s", secs(now - t_booted)},
            {"total_s", secs(now - t_run)}};
}

// events.txt (the guest's ftrace text) as guest-events.jsonl, one event a line.
void write_guest_events(const fs::path& out) {
    std::string ge;
    for (const auto& e : model::parse_ftrace(read_file(out / "events.txt"))) ge += e.dump() + "\n";
    write_file(out / "guest-events.jsonl", ge);
}

// Each file's XXH3-128 by guest path: the builder read each file back
// through its extents and hashed it (extents.json).
std::map<std::string, std::string> file_digests(const json& extents) {
    std::map<std::string, std::string> out;
    if (extents.is_object())
        for (const auto& f : extents.value("files", json::array()))
            out[std::string(scenario::kMountpoint) + f.value("path", "")] = f.value("xxh128", std::string("(not reported)"));
    return out;
}

RunResult interrupted(const scenario::Scenario& sc, const RunOptions& o, const fs::path& out, std::string phase, double boot_seconds) {
    const int sig = launch::interrupted_by();
    json hello;
    const auto results = step_results(sc, out, &hello);
    if (phase.empty())
        phase = hello.is_null() ? "booting the guest"
                                : fmt::format("running the steps ({} of {} done)", results.size(), sc.steps.size());
    const auto extents = json::parse(read_file(out / "extents.json"), nullptr, false);
    json steps_json = json::array();
    std::string steps_text;
    for (const auto& v : checks::check_steps(sc, results, file_digests(extents))) {
        steps_json.push_back(checks::to_json(v));
        steps_text += fmt::format("  step {:>2} {:<11} {:<22} {}\n", v.index, v.op, v.path, v.ran ? "done" : "did not run");
    }
    // The guest's events so far, as a finished run has them: the report can draw what there was.
    if (fs::exists(out / "events.txt")) {
        try {
            write_guest_events(out);
        } catch (const std::exception&) {
            // Not worth more than the verdict: without it the report says what is missing.
        }
    }
    json trace_json;
    std::string trace_text;
    try {
        const auto s = model::summarize(trace::read_trace((out / "trace.bin").string()));
        trace_json = model::to_json(s);
        trace_text = model::to_text(s);
    } catch (const std::exception& e) {
        trace_text = std::string("no device trace: ") + e.what() + "\n";
    }
    const std::string what = fmt::format("interrupted by signal {} ({}) while {}", sig, sig ? strsignal(sig) : "?", phase);
    json verdict = {{"scenario", sc.file},       {"name", sc.name},
                    {"kernel", o.kernel_name},   {"outcome", "interrupted"},
                    {"exit_code", static_cast<int>(Outcome::interrupted)},
                    {"interrupted", {{"signal", sig}, {"phase", phase}, {"steps_done", results.size()}, {"steps", sc.steps.size()}}},
                    {"problems", json::array({what})},
                    {"steps", steps_json},       {"device_trace", trace_json},
                    {"guest", hello},            {"boot_seconds", boot_seconds},
                    {"expect", json::array()},   {"findings", json::array()}};
    RunResult r;
    r.outcome = Outcome::interrupted;
    r.problems = {what};
    try {
        write_file(out / "verdict.json", verdict.dump(2) + "\n");
    } catch (const folder::FolderError& e) {
        r.problems.push_back(e.what());
    }
    r.summary = fmt::format("{} on {}: interrupted ({}), run folder {}\n{}{}", sc.name.empty() ? sc.file : sc.name, o.kernel_name, what,
                            out.string(), steps_text, trace_text);
    return r;
}

}  // namespace

RunResult run(const scenario::Scenario& sc, const RunOptions& o) {
    const auto t_run = std::chrono::steady_clock::now();
    // [[expect]] tables are checked after the run; a bad one must not cost a boot.
    std::vector<checks::Expectation> expectations;
    try {
        expectations = checks::parse_expectations(sc.expects, sc.file);
        for (const auto& e : expectations) checks::validate(e, sc);
    } catch (const checks::ExpectError& e) {
        return fail_with(Outcome::bad_input, e.what());
    }
    // Which driver mounts the disk: a kernel without the one asked for must not cost a boot either.
    const auto fsd_or = fs_driver(sc, o.kernel_dir, o.kernel_name);
    if (const auto* e = std::get_if<std::string>(&fsd_or)) return fail_with(Outcome::bad_input, *e);
    const FsDriver& fsd = std::get<FsDriver>(fsd_or);
    fs::create_directories(o.out_dir);
    const fs::path out = fs::absolute(o.out_dir);
    if (!sc.file.empty()) folder::copy_new(sc.file, out / "scenario.toml");
    if (launch::interrupted_by()) return interrupted(sc, o, out, "starting", 0);

    // 1. The disk, with each file's extents in device sectors.
    json build_cache = json::object();
    std::string disk_key;
    {
        auto bad = build_disk(sc, o, out, &build_cache, &disk_key);
        if (launch::interrupted_by()) return interrupted(sc, o, out, "building the disk", 0);
        if (bad) return *bad;
    }
    const json extents = json::parse(read_file(out / "extents.json"));

    // 2. What the agent runs: the scenario's steps, nothing else. The extent
    //    check happens before step 0 on a mount of its own (docs/architecture.md).
    std::vector<json> steps;
    for (const auto& st : sc.steps) {
        steps.push_back(st.args);
        // Only a literal digest needs the guest's SHA-256; "file" compares XXH3-128.
        if (st.expect.sha256 && *st.expect.sha256 != "file") steps.back()["sha256"] = true;
    }
    const bool extent_check = sc.extent_check && o.extent_check && !fsd.fstype.empty() && !sc.disk.files.empty();
    // Faults aimed at a file become rules on the sectors that hold it.
    std::vector<std::string> fault_args;
    for (const auto& f : sc.faults) {
        // Armed after a step: the device arms it when it reads that step's
        // closing marker. Otherwise as step 0 begins (its opening marker), so
        // that nothing before the steps (boot, the extent check) is faulted
        // or counts towards first=, every=, nth= or prob=.
        std::string armed = f.after_step >= 0 ? fmt::format(" after_marker={}", markers::after_step(f.after_step))
                            : f.rule.find("after_marker=") == std::string::npos ? fmt::format(" after_marker={}", markers::before_step(0)) : "";
        // Disarmed as the step begins: its opening marker.
        if (f.until_step >= 0) armed += fmt::format(" until_marker={}", markers::before_step(f.until_step));
        if (f.file.empty()) {
            fault_args.insert(fault_args.end(), {"--fault", f.rule + armed});
            continue;
        }
        json file;
        for (const auto& x : extents.value("files", json::array()))
            if (x.value("path", "") == f.file) file = x;
        const uint64_t size = file.value("size_bytes", uint64_t{0});
        const uint64_t lo = f.offset, hi = std::min(size, f.length == UINT64_MAX ? size : f.offset + f.length);
        bool any = false;
        for (const auto& e : file.value("extents", json::array())) {
            const uint64_t eo = e.value("file_offset", uint64_t{0}), es = e.value("sector", uint64_t{0}), en = e.value("sectors", uint64_t{0});
            const uint64_t a = std::max(lo, eo), b = std::min(hi, eo + sectors::to_bytes(en));
            if (a >= b) continue;
            fault_args.insert(fault_args.end(), {"--fault", fmt::format("{} sector={}..{}{}", f.rule, es + sectors::of_offset(a - eo), es + sectors::of_offset(b - eo - 1), armed)});
            any = true;
        }
        if (!any)
            return fail_with(Outcome::bad_input, fmt::format("{}:{}: the fault's range {}+{} is not inside {} ({} bytes)", sc.file, f.line, f.offset,
                                                             f.length == UINT64_MAX ? 0 : f.length, f.file, size));
    }

    const uint64_t disk_sectors = sectors::of_offset(fs::file_size(out / "disk.img"));
    json queue = json::object();
    for (const auto& [k, v] : sc.guest.queue) queue[k] = v;
    const json run_json = {{"version", 1},
                           {"disk", "/dev/vda"},
                           {"mountpoint", scenario::kMountpoint},
                           {"fstype", fsd.fstype},
                           {"mount_options", sc.guest.mount_options},
                           {"queue", queue},
                           {"marker", {{"first_sector", disk_sectors}, {"count", sectors::to_bytes(kMarkerSectors) / sc.device.logical_block_size},
                                       {"block_size", sc.device.logical_block_size}}},
                           // Without the guest trace the agent sets up no ftrace at all.
                           {"trace", o.guest_trace ? json{{"events", kEvents}, {"functions", kFunctions}, {"buffer_kb", trace_buffer_kb(sc)}}
                                                   : json{{"events", json::array()}, {"functions", json::array()}}},
                           {"step_timeout_s", sc.guest.step_timeout_s},
                           {"steps", steps}};
    json run_spec = run_json;
    if (extent_check) {
        json files = json::array();
        for (const auto& f : sc.disk.files) files.push_back(f.path);
        // Not the steps' mountpoint: nothing the steps look at is touched.
        run_spec["extent_check"] = {{"mountpoint", "/run/blkrig-extent-check"}, {"fstype", fsd.fstype}, {"files", files}};
    }
    if (markers::needed_for(steps.size()) > sectors::to_bytes(kMarkerSectors) / sc.device.logical_block_size)
        return fail_with(Outcome::bad_input, fmt::format("{}: {} steps need more markers than the region holds", sc.file, steps.size()));
    // What an earlier boot of this kernel with these modules set as the
    // function filter (run/filter_hint.hpp).
    const std::vector<std::string> modules = initramfs_modules(sc, o, fsd, kAgentModules);
    const CacheKey hint_key = filter_hint_key(o.kernel_dir, modules, kFunctions);
    if (o.guest_trace)
        if (auto hint = load_filter_hint(hint_key, run_spec)) run_spec["trace"]["filter_hint"] = std::move(*hint);
    // An extent check an earlier boot of this kernel passed on this same
    // image is not repeated in the guest (run/extent_memo.hpp).
    std::optional<CacheKey> memo_key;
    json memo;
    if (extent_check && !disk_key.empty()) {
        memo_key = extent_memo_key(disk_key, o.kernel_dir, modules, run_spec["extent_check"]);
        if (!o.fresh_extent_check)
            if (auto m = load_extent_memo(*memo_key)) {
                memo = std::move(*m);
                memo["cached"] = true;
                run_spec.erase("extent_check");
            }
    }
    write_file(out / "run.json", run_spec.dump(2));

    // 3. The initramfs: the agent as /init, the run description, the modules.
    {
        auto bad = build_initramfs(sc, o, out, o.tools.agent, {{out / "run.json", "/etc/blkrig/run.json"}},
                                   modules, Busybox::no, &build_cache);
        if (launch::interrupted_by()) return interrupted(sc, o, out, "building the initramfs", 0);
        if (bad) return *bad;
    }

    // 4. Boot.
    launch::BootSpec b = boot_spec(sc, o, out);
    b.device_args.insert(b.device_args.end(), fault_args.begin(), fault_args.end());
    if (!o.control_path.empty()) b.device_args.insert(b.device_args.end(), {"--control", o.control_path});
    if (!o.faults_file.empty()) {
        folder::copy_new(o.faults_file, out / "fault-rules");
        b.device_args.insert(b.device_args.end(), {"--faults", (out / "fault-rules").string()});
    }
    const fs::path cut_report = out / "power-cut.json";
    fs::remove(cut_report);
    if (sc.power_cut.after_step >= 0) {
        // The closing marker of the step: the device cuts once the guest has read it.
        const uint64_t marker = markers::after_step(static_cast<uint64_t>(sc.power_cut.after_step));
        b.device_args.insert(b.device_args.end(),
                             {"--power-cut", fmt::format("marker={},mode={},seed={},share={},report={}", marker, sc.power_cut.mode,
                                                         sc.power_cut.seed, sc.power_cut.share, cut_report.string()),
                              "--write-log", (out / "write-log.bin").string()});
    }
    if (o.record_writes) {
        folder::copy_new(out / "disk.img", out / "disk-before.img");
        if (sc.power_cut.after_step < 0) b.device_args.insert(b.device_args.end(), {"--write-log", (out / "write-log.bin").string()});
    }
    b.serial_ports = {{"blkrig.results", "results.jsonl"}, {"blkrig.events", "events.txt"}};
    // The agent sends its trace before its done record: events.txt is then
    // whole, and turning it into guest-events.jsonl overlaps the guest's
    // sync, its power-off and QEMU's exit instead of following them.
    std::future<void> guest_events;
    b.on_done = [&guest_events, &out]() noexcept {
        try {
            guest_events = std::async(std::launch::async, [&out] { write_guest_events(out); });
        } catch (const std::system_error&) {
            // No thread to be had: it is written after QEMU's exit instead.
        }
    };
    const auto t_boot = std::chrono::steady_clock::now();
    const auto br = launch::boot(b);
    // Finished (or failed) before anything else reads or writes the folder.
    std::exception_ptr guest_events_error;
    const bool guest_events_written = guest_events.valid();
    if (guest_events_written) {
        try {
            guest_events.get();
        } catch (...) {
            guest_events_error = std::current_exception();
        }
    }
    if (br.outcome == launch::BootOutcome::interrupted) return interrupted(sc, o, out, "", br.seconds);
    const auto t_booted = std::chrono::steady_clock::now();

    // 5. What came back.
    std::map<size_t, json> results;
    std::vector<std::string> problems;
    bool done = false;
    json hello, before;
    {
        auto res = model::parse_results(read_file(out / "results.jsonl"));
        for (auto& p : res.problems) problems.push_back("results.jsonl " + p);
        for (auto& e : res.errors) problems.push_back("agent: " + e);
        for (auto& s : res.steps)
            if (s.index < sc.steps.size()) results[s.index] = std::move(s.record);
        hello = std::move(res.hello);
        before = std::move(res.before_steps);
        done = res.done;
    }
    if (o.guest_trace) save_filter_hint(hint_key, hello);
    if (done) {
        if (!memo.is_null() && before.is_object()) before["extent_check"] = memo;
        auto found = check_before_steps(before, extent_check, extents);
        if (found.empty() && memo.is_null() && memo_key && before.is_object()) save_extent_memo(*memo_key, before.value("extent_check", json()));
        if (!found.empty() && !memo.is_null()) {
            forget_extent_memo(*memo_key);
            found.push_back(kBeforeStepsProblem + std::string("the extents above are a record an earlier boot kept, now removed: the next run "
                                                              "checks in the guest again"));
        }
        for (auto& p : found) problems.push_back(std::move(p));
    }
    const KnobReport knobs = check_guest_knobs(sc, hello, results, out);
    problems.insert(problems.end(), knobs.problems.begin(), knobs.problems.end());
    if (guest_events_error) std::rethrow_exception(guest_events_error);
    if (!guest_events_written) write_guest_events(out);  // no done record: what there is

    const auto verdicts = checks::check_steps(sc, results, file_digests(extents));
    // The [[expect]] tables, against the run folder's model (docs/harness.md).
    std::vector<checks::CheckResult> expect_results;
    std::vector<std::string> findings;
    bool model_failed = false;
    std::optional<model::Run> loaded;  // the report draws from it too
    if (!expectations.empty() && br.outcome == launch::BootOutcome::ok && done) {
        try {
            const auto& m = loaded.emplace(model::load_run(out));
            expect_results = checks::check_all(m, expectations);
            findings = m.findings;
        } catch (const std::exception& e) {
            problems.push_back(fmt::format("the [[expect]] checks could not run: {}", e.what()));
            model_failed = true;
        }
    }
    json power_cut;
    if (sc.power_cut.after_step >= 0) {
        try {
            power_cut = json::parse(read_file(cut_report));
        } catch (const std::exception& e) {
            problems.push_back(fmt::format("{}:{}: the power cut after step {} did not happen ({} is missing or unreadable)", sc.file,
                                           sc.power_cut.line, sc.power_cut.after_step, cut_report.string()));
        }
    }

    RunResult r;
    bool infra = br.outcome != launch::BootOutcome::ok || !done;
    if (br.outcome != launch::BootOutcome::ok) problems.insert(problems.begin(), fmt::format("boot: {}", br.message));
    else if (!done)
        problems.insert(problems.begin(), fmt::format("the guest agent did not finish; console.log:\n{}", launch::tail_lines((out / "console.log").string(), 20)));
    bool expectations_hold = true;
    for (const auto& v : verdicts)
        if (!v.ok) {
            expectations_hold = false;
            if (v.ran) problems.push_back(checks::describe_failure(v));
        }
    for (const auto& c : expect_results)
        if (!c.ok) {
            expectations_hold = false;
            problems.push_back(fmt::format("{} {}: {}", c.where, c.property, c.message));
        }
    const bool extent_problem = std::any_of(problems.begin(), problems.end(), [](const std::string& p) {
        return p.rfind(kBeforeStepsProblem, 0) == 0;
    });
    if (sc.power_cut.after_step >= 0 && !power_cut.is_object()) expectations_hold = false;
    r.outcome = infra || extent_problem || model_failed || !knobs.problems.empty() ? Outcome::infra : (expectations_hold ? Outcome::pass : Outcome::fail);
    r.problems = problems;

    // 6. The verdict and a summary.
    json steps_json = json::array();
    for (const auto& v : verdicts) steps_json.push_back(checks::to_json(v));
    std::string trace_summary;
    json trace_json;
    try {
        const auto t = trace::read_trace((out / "trace.bin").string());
        const auto s = model::summarize(t);
        trace_summary = model::to_text(s);
        trace_json = model::to_json(s);
    } catch (const std::exception& e) {
        trace_summary = std::string("no device trace: ") + e.what() + "\n";
    }
    const char* outcome_name = r.outcome == Outcome::pass ? "pass" : r.outcome == Outcome::fail ? "fail" : "error";
    json verdict = {{"scenario", sc.file},     {"name", sc.name},          {"kernel", o.kernel_name},
                    {"outcome", outcome_name}, {"exit_code", static_cast<int>(r.outcome)},
                    {"problems", problems},    {"steps", steps_json},      {"device_trace", trace_json},
                    {"guest", hello},          {"boot_seconds", br.seconds}, {"power_cut", power_cut},
                    {"before_steps", before}};
    verdict["expect"] = json::array();
    for (const auto& c : expect_results) verdict["expect"].push_back(checks::to_json(c));
    verdict["findings"] = findings;
    verdict["fs_driver"] = to_json(fsd);
    verdict["build_cache"] = build_cache;
    verdict["knobs"] = to_json(knobs, hello)["knobs"];
    const json phases = phase_times(br, t_run, t_boot, t_booted);
    verdict["phases"] = phases;
    write_file(out / "verdict.json", verdict.dump(2) + "\n");

    std::string s = fmt::format("{} on {}: {} ({:.1f} s), run folder {}\n", sc.name.empty() ? sc.file : sc.name, o.kernel_name,
                                outcome_name, br.seconds, out.string());
    for (const auto& v : verdicts) {
        const auto& res = v.result;
        s += fmt::format("  step {:>2} {:<11} {:<22} {}", v.index, v.op, v.path,
                         !v.ran ? "did not run" : (v.ok ? "ok" : "FAILED"));
        if (v.ran && res.contains("bytes") && res["bytes"].get<uint64_t>() > 0) s += fmt::format("  {} bytes", res["bytes"].get<uint64_t>());
        if (v.ran && res.value("ret", 0) != 0) s += fmt::format("  ret {} {}", res.value("ret", 0), res.value("error", std::string()));
        s += "\n";
    }
    for (const auto& c : expect_results) s += fmt::format("  expect {}\n", checks::to_text(c));
    if (sc.disk.fs == "ext2") s += fmt::format("  ext2 disk mounted by the {} driver (mount -t {})\n", fsd.driver, fsd.fstype);
    s += trace_summary;
    if (power_cut.is_object())
        s += fmt::format("  power cut after step {} ({}): {} unflushed write(s) dropped, {} kept; survivors in disk.img, log in write-log.bin\n",
                         sc.power_cut.after_step, power_cut.value("mode", ""), power_cut["dropped"].size(), power_cut["kept"].size());
    {
        const auto sec = [&](const char* k) { return phases[k].is_number() ? fmt::format("{:.2f} s", phases[k].get<double>()) : std::string("?"); };
        s += fmt::format("  time: build {}, boot {}, steps {}, shutdown {}, checks {}\n", sec("build_s"), sec("boot_s"), sec("steps_s"),
                         sec("shutdown_s"), sec("checks_s"));
    }
    for (const auto& p : problems) s += "  problem: " + p + "\n";
    // The run's page (docs/report.md): without it the run still stands.
    if (const auto why = report::write_run_report(out, loaded ? &*loaded : nullptr); !why.empty()) s += "  note: no report.html: " + why + "\n";
    r.summary = s;
    return r;
}

}  // namespace blkrig::run

namespace blkrig::run {

RunResult vm(const scenario::Scenario& sc, const RunOptions& o, const fs::path& init_shell) {
    const auto fsd_or = fs_driver(sc, o.kernel_dir, o.kernel_name);
    if (const auto* e = std::get_if<std::string>(&fsd_or)) return fail_with(Outcome::bad_input, *e);
    const FsDriver& fsd = std::get<FsDriver>(fsd_or);
    if (sc.disk.fs == "ext2") fmt::print(stderr, "blkrig: the ext2 disk is mounted by the {} driver (mount -t {})\n", fsd.driver, fsd.fstype);
    fs::create_directories(o.out_dir);
    const fs::path out = fs::absolute(o.out_dir);
    if (!sc.file.empty()) folder::copy_new(sc.file, out / "scenario.toml");
    if (auto bad = build_disk(sc, o, out)) return *bad;
    std::string conf = fmt::format("FSTYPE='{}'\nMOUNT_OPTIONS='{}'\n", fsd.fstype, sc.guest.mount_options);
    for (const auto& [k, v] : sc.guest.queue) conf += fmt::format("QUEUE_{}='{}'\n", k, v);
    write_file(out / "vm.conf", conf);
    if (auto bad = build_initramfs(sc, o, out, init_shell, {{out / "vm.conf", "/etc/blkrig/vm.conf"}},
                                   initramfs_modules(sc, o, fsd, {"virtio_pci", "virtio_blk"}), Busybox::yes))
        return *bad;
    launch::BootSpec b = boot_spec(sc, o, out);
    b.interactive = true;
    // Socket paths are short-limited; the run folder may be deep.
    const std::string control = fmt::format("/tmp/blkrig-ctl-{}.sock", ::getpid());
    b.device_args.insert(b.device_args.end(), {"--control", control});
    fmt::print(stderr,
               "blkrig: the guest console follows; leave its shell to power off.\n"
               "blkrig: device trace (live): {0}   read it with: blkrig trace dump {0} --format text\n"
               "blkrig: device control: {1}   e.g. blkrig fault --control {1} add \"ioerr op=read\"\n",
               (out / "trace.bin").string(), control);
    const auto br = launch::boot(b);
    RunResult r;
    r.outcome = br.outcome == launch::BootOutcome::ok ? Outcome::pass
                : br.outcome == launch::BootOutcome::interrupted ? Outcome::interrupted : Outcome::infra;
    if (br.outcome != launch::BootOutcome::ok) r.problems.push_back(br.message);
    std::string summary = fmt::format("vm on {}: {} ({:.1f} s), run folder {}\n", o.kernel_name, launch::to_string(br.outcome), br.seconds,
                                      out.string());
    try {
        summary += model::to_text(model::summarize(trace::read_trace((out / "trace.bin").string())));
    } catch (const std::exception& e) {
        summary += std::string("no device trace: ") + e.what() + "\n";
    }
    r.summary = summary;
    return r;
}

}  // namespace blkrig::run
