// blkrig: the rig's command line. Verbs so far:
//   blkrig trace dump FILE [--format jsonl|text]
//   blkrig trace summary FILE [--json]
//   blkrig trace export FILE --format blkparse|perfetto|csv [--out FILE]
//   blkrig boot --disk IMG --initrd FILE [--kernel K] [--out DIR] [--launcher qemu|libvirt] ...
//   blkrig run SCENARIO.toml [--kernel K] [--out DIR] [--launcher qemu|libvirt [--libvirt-uri URI]]
//   blkrig run SCENARIO|FOLDER|GLOB... [--kernel K]... [--jobs N] [--junit FILE] [--quiet]
//   blkrig check RUN_DIR [EXPECT.toml] [--format text|json]
//   blkrig report RUN_DIR... [--out FILE.html]
//   blkrig kernel list | fetch NAME [--extra-modules ext2]
// Exit codes: 0 fine, 1 the trace is incomplete (summary/dump --strict) or
// an expectation failed (check), 2 bad arguments or input, 3 the
// infrastructure failed (boot), 130 interrupted.
#include "crash/crash.hpp"
#include "checks/expect.hpp"
#include "export/export.hpp"
#include "faults/rule_file.hpp"
#include "folder/run_folder.hpp"
#include "launch/boot.hpp"
#include "model/run_model.hpp"
#include "launch/process.hpp"
#include "model/trace_view.hpp"
#include "report/report.hpp"
#include "run/fs_driver.hpp"
#include "run/host_limits.hpp"
#include "run/matrix.hpp"
#include "cli/control_client.hpp"
#include "run/catalogue.hpp"
#include "run/run.hpp"
#include "scenario/scenario.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/fd.hpp"
#include "common/host.hpp"
#include "common/paths.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <map>
#include <thread>

#include <glob.h>

using namespace blkrig;
namespace fs = std::filesystem;

namespace {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// --launcher and --libvirt-uri, on `blkrig boot` and `blkrig run`.
struct LauncherOptions {
    std::string name = "qemu";
    std::string libvirt_uri;
    void add_to(CLI::App* app) {
        app->add_option("--launcher", name, "who starts QEMU: qemu (directly) or libvirt (a transient domain)")
            ->check(CLI::IsMember({"qemu", "libvirt"}))
            ->capture_default_str();
        app->add_option("--libvirt-uri", libvirt_uri,
                        "with --launcher libvirt: the connection (default: libvirt's embedded QEMU driver on a root folder of the run's own)");
    }
    launch::Launcher launcher() const {
        if (!libvirt_uri.empty() && name != "libvirt") throw UsageError("--libvirt-uri needs --launcher libvirt");
        return name == "libvirt" ? launch::Launcher::libvirt : launch::Launcher::qemu;
    }
};

fs::path self_dir() { return fs::canonical("/proc/self/exe").parent_path(); }

fs::path kernel_cache() {
    const char* c = std::getenv("BLKRIG_CACHE");
    return fs::path(c && *c ? c : "/var/cache/blkrig") / "kernels";
}

// A kernel argument is a file (bzImage), a folder holding vmlinuz, or a
// catalogue name fetched into the cache (guest-driver/kernels/fetch-debian).
fs::path resolve_kernel(const std::string& k) {
    std::error_code ec;
    if (fs::is_regular_file(k, ec)) return k;
    if (fs::is_directory(k, ec) && fs::is_regular_file(fs::path(k) / "vmlinuz", ec)) return fs::path(k) / "vmlinuz";
    const fs::path cached = kernel_cache() / k / "vmlinuz";
    if (fs::is_regular_file(cached, ec)) return cached;
    throw UsageError(fmt::format("kernel '{}' is neither a file, a folder with vmlinuz, nor a fetched catalogue kernel ({} is missing; "
                                 "run guest-driver/kernels/fetch-debian {})",
                                 k, cached.string(), k));
}

fs::path default_device();

// Where the rig's own pieces are: next to this program in the build tree
// (build/harness/blkrig, build/qemu-device/..., build/guest-driver/...), and
// the source tree for scripts.
fs::path source_dir() {
    if (const char* d = std::getenv("BLKRIG_SOURCE_DIR"); d && *d) return d;
    return BLKRIG_SOURCE_DIR;
}

// `blkrig kernel list [--json]`: the catalogue, and what of each kernel is
// in the cache.
int kernel_list(bool as_json) {
    const auto& cat = run::catalogue();
    nlohmann::json all = nlohmann::json::array();
    for (const auto& k : cat.kernels) {
        const fs::path dir = kernel_cache() / k.name;
        std::ifstream rel(dir / "release");
        std::string release;
        const bool fetched = rel && std::getline(rel, release);
        std::error_code ec;
        const bool ext2 = fetched && fs::is_regular_file(run::ext2_module_path(dir), ec);
        if (as_json) {
            all.push_back({{"name", k.name},
                           {"summary", k.summary},
                           {"suite", k.suite},
                           {"package", k.package},
                           {"default", k.name == cat.default_name},
                           {"fetched", fetched},
                           {"release", fetched ? nlohmann::json(release) : nlohmann::json(nullptr)},
                           {"dir", dir.string()},
                           {"extra_modules", {{"ext2", ext2}}}});
            continue;
        }
        std::string state = "not fetched (blkrig kernel fetch " + k.name + ")";
        if (fetched)
            state = "fetched: " + release + " in " + dir.string() +
                    (ext2 ? "; ext2: built (" + std::string(run::kExt2Module) + ".ko)"
                          : "; ext2: not built (blkrig kernel fetch " + k.name + " --extra-modules ext2)");
        fmt::print("{:<24} {:<52} {}\n", k.name, k.summary, state);
    }
    if (as_json) fmt::print("{}\n", all.dump(2));
    return 0;
}

int kernel_fetch(const std::string& name, const std::vector<std::string>& extra_modules) {
    if (!run::catalogue().find(name))
        throw UsageError(fmt::format("unknown kernel '{}' (known: {}; see blkrig kernel list)", name, run::catalogue().names()));
    std::string script = (source_dir() / "guest-driver" / "kernels" / "fetch-debian").string();
    std::vector<std::string> args = {script, name};
    // fetch-debian checks the module names (exit 2 for an unknown one).
    if (!extra_modules.empty()) args.insert(args.end(), {"--extra-modules", fmt::format("{}", fmt::join(extra_modules, ","))});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(script.c_str(), argv.data());
    throw std::runtime_error(fmt::format("cannot run {}: {}", script, std::strerror(errno)));
}


// The disk `blkrig vm` gets without --scenario: vfat with one 4 MiB file.
constexpr const char* kDefaultVm = R"(
[scenario]
name = "vm"
[disk]
fs = "vfat"
size = "64M"
[[disk.files]]
path = "/f1.bin"
size = "4M"
[[steps]]
op = "sync"
)";

// A user's own build: a bzImage and its modules folder (lib/modules/VERSION,
// after depmod) become a kernel folder like the catalogue's, inside the run
// folder.
fs::path own_kernel(const fs::path& bzimage, const fs::path& modules, const fs::path& out) {
    std::error_code ec;
    if (!fs::is_regular_file(bzimage, ec)) throw UsageError(fmt::format("--kernel {} is not a file (with --modules, give the bzImage)", bzimage.string()));
    if (!fs::is_directory(modules, ec)) throw UsageError(fmt::format("--modules {} is not a folder", modules.string()));
    if (!fs::exists(modules / "modules.dep"))
        throw UsageError(fmt::format("--modules {} has no modules.dep: run depmod for it (depmod -b BASE VERSION, with the folder at "
                                     "BASE/lib/modules/VERSION)",
                                     modules.string()));
    const fs::path dir = fs::absolute(out) / "kernel";
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::create_symlink(fs::absolute(bzimage), dir / "vmlinuz");
    fs::create_symlink(fs::absolute(modules), dir / "modules");
    std::ofstream(dir / "release") << fs::absolute(modules).filename().string() << "\n";
    return dir / "vmlinuz";
}

// `--faults FILE` read and parsed as the device will: a usage error naming
// the line. With the scenario, a rule that could never fire on its device too.
void check_faults_file(const std::string& path, const scenario::Scenario* sc = nullptr) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw UsageError(fmt::format("--faults {}: cannot read it: {}", path, std::strerror(errno)));
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    auto parsed = faults::parse_rule_file(text);
    if (auto* e = std::get_if<faults::RuleFileError>(&parsed)) throw UsageError(e->describe(path));
    if (!sc) return;
    for (const auto& fr : std::get<std::vector<faults::FileRule>>(parsed))
        if (auto why = faults::never_fires(fr.rule, scenario::device_capacity_sectors(*sc), sc->device.num_queues))
            throw UsageError(fmt::format("{}:{}: {} (the run's device: disk.size = {} bytes and {} marker sectors, device.num_queues = {})", path,
                                         fr.line, *why, sc->disk.size_bytes, scenario::kMarkerSectors, sc->device.num_queues));
}

// A disk or a guest this host cannot hold must not cost a build or a boot.
void check_host_limits(const scenario::Scenario& sc, const fs::path& out_dir) {
    if (auto too_big = run::host_limit_problems(sc, run::read_host_facts(out_dir)); !too_big.empty())
        throw UsageError(fmt::format("{}", fmt::join(too_big, "\nblkrig: ")));
}

int do_run(const std::string& scenario_path, std::string kernel, const std::string& out, unsigned timeout, bool interactive = false,
           const std::string& modules = {}, const std::string& control = {}, const std::string& disk_from = {},
           bool extent_check = true, bool guest_trace = true, const std::string& faults_file = {},
           launch::Launcher launcher = launch::Launcher::qemu, const std::string& libvirt_uri = {}, bool force = false,
           bool record_writes = false, bool fresh_extent_check = false) {
    scenario::Scenario sc;
    try {
        sc = scenario_path.empty() ? scenario::parse_scenario(kDefaultVm, "") : scenario::load_scenario(scenario_path);
    } catch (const scenario::ScenarioError& e) {
        fmt::print(stderr, "blkrig: {}\n", e.what());
        return 2;
    }
    // A bad rule in --faults must not cost a disk or a boot.
    if (!faults_file.empty()) check_faults_file(faults_file, &sc);
    // Nor a path given twice, or a --control path that holds a file or a live socket.
    if (auto twice = same_file_twice({{"SCENARIO", scenario_path},
                                      {"--control", control},
                                      {"--faults", faults_file},
                                      {"--disk-from disk.img", disk_from.empty() ? "" : (fs::path(disk_from) / "disk.img").string()}}))
        throw UsageError(*twice);
    if (!control.empty())
        if (auto why = socket_path_problem("--control", control)) throw UsageError(*why);
    for (const auto& need : sc.needs) {
        if (need == "disk-from" && disk_from.empty())
            throw UsageError(fmt::format("{}:{}: this scenario boots on what an earlier run left: give --disk-from RUN_DIR", sc.file, sc.needs_line));
        if (need == "control" && control.empty() && !interactive)
            throw UsageError(fmt::format("{}:{}: this scenario is steered during the run: give --control SOCKET (and use blkrig fault)", sc.file,
                                         sc.needs_line));
    }
    if (kernel.empty()) kernel = sc.kernel.empty() ? run::catalogue().default_name : sc.kernel;
    run::RunOptions o;
    o.out_dir = out.empty() ? fs::path("runs") / (scenario_path.empty() ? fs::path("vm") : fs::path(scenario_path).stem()) : fs::path(out);
    check_host_limits(sc, o.out_dir);
    // A catalogue kernel is checked before the folder is touched; a user's own build is laid out inside it.
    fs::path vmlinuz = modules.empty() ? resolve_kernel(kernel) : fs::path();
    auto check_modules = [&] {
        if (!fs::exists(vmlinuz.parent_path() / "modules"))
            throw UsageError(fmt::format("kernel {} has no modules folder at {}: give a catalogue kernel or a folder laid out by fetch-debian",
                                         kernel, (vmlinuz.parent_path() / "modules").string()));
    };
    if (modules.empty()) check_modules();
    if (!disk_from.empty() && !fs::is_regular_file(fs::path(disk_from) / "disk.img"))
        throw UsageError(fmt::format("--disk-from {}: no disk.img there (give the run folder of an earlier run)", disk_from));
    // From here a signal stops the run at its next step, and verdict.json still says what it had.
    launch::catch_interrupts();
    // Nothing is written into the run folder before it is ours (docs/reliability.md).
    const folder::Claim claim = folder::claim(o.out_dir, folder::Kind::run, force);
    launch::reap_stale_temp();
    if (!modules.empty()) {
        vmlinuz = own_kernel(kernel, modules, o.out_dir);
        check_modules();
    }
    o.kernel_dir = vmlinuz.parent_path();
    o.kernel_name = kernel;
    o.timeout_s = timeout;
    o.control_path = control;
    o.disk_from = disk_from;
    o.extent_check = extent_check;
    o.fresh_extent_check = fresh_extent_check;
    o.guest_trace = guest_trace;
    if (!faults_file.empty()) o.faults_file = fs::absolute(faults_file);
    o.launcher = launcher;
    o.libvirt_uri = libvirt_uri;
    o.record_writes = record_writes;
    const fs::path build = self_dir().parent_path();
    o.tools = {default_device(), build / "guest-driver" / "agent" / "blkrig-agent", build / "guest-driver" / "image" / "blkrig-mkdisk",
               source_dir() / "guest-driver" / "image" / "mkinitramfs"};
    for (const auto& t : {interactive ? o.tools.mkdisk : o.tools.agent, o.tools.mkdisk, o.tools.mkinitramfs})
        if (!fs::exists(t)) throw launch::LaunchError(fmt::format("{} is missing: build the project (ci/build)", t.string()));
    fmt::print(stderr, "blkrig: {} {} on {} into {}\n", interactive ? "starting a VM for" : "running",
               scenario_path.empty() ? "the default disk" : scenario_path, kernel, o.out_dir.string());
    const auto r = interactive ? run::vm(sc, o, source_dir() / "guest-driver" / "image" / "init-shell.sh") : run::run(sc, o);
    std::cout << r.summary;
    if (r.outcome == run::Outcome::bad_input || r.outcome == run::Outcome::infra || r.outcome == run::Outcome::interrupted)
        for (const auto& p : r.problems) fmt::print(stderr, "blkrig: {}\n", p);
    return static_cast<int>(r.outcome);
}

// `blkrig crash`: record the scenario once (or take an earlier record),
// then build and check its crash states (crash/crash.hpp, docs/crash.md).
struct CrashArgs {
    std::string scenario, kernel, out, states = "all", record_from, boot;
    uint64_t seed = 0;
    unsigned jobs = 0;
    std::optional<size_t> only;
    bool force = false;
};

int do_crash(const CrashArgs& a) {
    scenario::Scenario sc;
    try {
        sc = scenario::load_scenario(a.scenario);
    } catch (const scenario::ScenarioError& e) {
        fmt::print(stderr, "blkrig: {}\n", e.what());
        return 2;
    }
    crash::CrashOptions o;
    try {
        o.sel = crash::parse_selection(a.states);
    } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
    }
    o.sel.seed = a.seed;
    o.only = a.only;
    o.jobs = a.jobs ? a.jobs : std::max(1u, std::thread::hardware_concurrency());
    // Crash states come from what the steps change: a scenario that changes nothing has none worth a recording.
    if (std::none_of(sc.steps.begin(), sc.steps.end(), [](const scenario::Step& st) {
            return st.op == "write" || st.op == "mmap_write" || st.op == "truncate" || st.op == "rename";
        }))
        throw UsageError(fmt::format("{}: no step writes (write, mmap_write, truncate, rename): a crash leaves nothing a run changed to check",
                                     a.scenario));
    if (sc.promises.empty() && sc.disk.fs == "raw")
        throw UsageError(fmt::format("{}: a raw disk with no [[crash.promise]]: there is nothing to check in a crash state", a.scenario));
    const fs::path out = a.out.empty() ? fs::path("runs") / "crash" / fs::path(a.scenario).stem() : fs::path(a.out);
    if (!a.record_from.empty() && !fs::is_regular_file(fs::path(a.record_from) / "write-log.bin"))
        throw UsageError(fmt::format("--record-from {}: no write-log.bin there (give the folder of blkrig run --record-writes, or OUT/record of an earlier blkrig crash)",
                                     a.record_from));
    launch::catch_interrupts();
    const folder::Claim claim = folder::claim(out, folder::Kind::crash, a.force);
    o.out = fs::absolute(out);
    o.blkrig = fs::canonical("/proc/self/exe");  // the recording run and the guest boots
    o.record = a.record_from.empty() ? o.out / "record" : fs::absolute(a.record_from);
    if (a.record_from.empty()) {
        // 1. Record: one run of the scenario with every write logged, a child process like a matrix cell.
        std::vector<std::string> argv = {o.blkrig.string(), "run", a.scenario, "--out", o.record.string(), "--record-writes"};
        if (!a.kernel.empty()) argv.insert(argv.end(), {"--kernel", a.kernel});
        fmt::print(stderr, "blkrig crash: recording {} into {}\n", a.scenario, o.record.string());
        const auto r = launch::run_tool(argv, std::chrono::seconds(sc.timeout_s + 300));
        if (r.exit_code != 0) {
            fmt::print(stderr, "{}", r.output);
            fmt::print(stderr, "blkrig crash: the recording run ended with exit {}; no state was checked\n", r.exit_code);
            return r.exit_code == 1 ? 3 : r.exit_code > 0 ? r.exit_code : 3;
        }
    }
    o.boot = a.boot;
    o.kernel = a.kernel;
    o.rerun = fmt::format("blkrig crash {} --record-from {} --states {} --seed {}", a.scenario, o.record.string(), a.states, a.seed);
    if (!a.boot.empty()) o.rerun += " --boot " + a.boot;
    if (!a.kernel.empty()) o.rerun += " --kernel " + a.kernel;
    const auto r = crash::check_states(sc, o);
    std::cout << r.summary;
    return r.exit;
}

// What `blkrig run` was given, for a matrix of scenarios x kernels.
struct MatrixArgs {
    std::vector<std::string> scenarios;  // files, folders, globs
    std::vector<std::string> kernels;    // none: each scenario's own
    std::string out;                     // default runs/matrix
    unsigned jobs = 0;                   // 0: the CPU count
    std::string junit;
    bool quiet = false;
    std::vector<std::string> run_args;   // options each cell's run gets
    bool force = false;                  // replace an earlier matrix folder
};

// Files, folders (their *.toml) and globs, in order, each file once.
std::vector<std::string> expand_scenarios(const std::vector<std::string>& args) {
    std::vector<std::string> files;
    auto add = [&](const std::string& f) {
        if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
    };
    for (const auto& a : args) {
        std::error_code ec;
        if (fs::is_directory(a, ec)) {
            std::vector<std::string> in;
            for (const auto& e : fs::directory_iterator(a, ec))
                if (e.path().extension() == ".toml" && e.is_regular_file(ec)) in.push_back(e.path().string());
            if (in.empty()) throw UsageError(fmt::format("scenario folder {} holds no .toml file", a));
            std::sort(in.begin(), in.end());
            for (const auto& f : in) add(f);
        } else if (a.find_first_of("*?[") != std::string::npos && !fs::exists(a, ec)) {
            glob_t g{};
            const int r = ::glob(a.c_str(), 0, nullptr, &g);
            std::vector<std::string> in(g.gl_pathv, g.gl_pathv + (r == 0 ? g.gl_pathc : 0));
            ::globfree(&g);
            if (in.empty()) throw UsageError(fmt::format("scenario pattern '{}' matches no file", a));
            for (const auto& f : in) add(f);
        } else {
            add(a);
        }
    }
    return files;
}

std::string kernel_label(const std::string& k) {
    std::string s = fs::path(k).filename().string();
    if (s == "vmlinuz" || s.empty()) s = fs::path(k).parent_path().filename().string();
    for (char& c : s)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
    return s.empty() ? "kernel" : s;
}

int do_matrix(const MatrixArgs& a) {
    const auto files = expand_scenarios(a.scenarios);
    // Every scenario and kernel is checked before anything boots.
    std::vector<scenario::Scenario> scs;
    for (const auto& f : files) {
        try {
            scs.push_back(scenario::load_scenario(f));
        } catch (const scenario::ScenarioError& e) {
            fmt::print(stderr, "blkrig: {}\n", e.what());
            return 2;
        }
    }
    std::vector<std::string> kernels = a.kernels;
    for (const auto& k : kernels) {
        const fs::path v = resolve_kernel(k);
        if (!fs::exists(v.parent_path() / "modules"))
            throw UsageError(fmt::format("kernel {} has no modules folder at {}", k, (v.parent_path() / "modules").string()));
    }
    run::MatrixOptions o;
    const fs::path out = a.out.empty() ? fs::path("runs") / "matrix" : fs::path(a.out);
    for (const auto& sc : scs) check_host_limits(sc, out);
    std::map<std::string, int> stems;
    for (size_t i = 0; i < files.size(); ++i) {
        std::string stem = fs::path(files[i]).stem().string();
        if (int n = ++stems[stem]; n > 1) stem += fmt::format("-{}", n);
        std::vector<std::string> ks = kernels;
        if (ks.empty()) ks = {scs[i].kernel.empty() ? run::catalogue().default_name : scs[i].kernel};
        for (const auto& k : ks) {
            if (a.kernels.empty()) resolve_kernel(k);  // a scenario's own kernel, checked too
            run::Cell c;
            c.scenario_path = files[i];
            c.name = scs[i].name.empty() ? fs::path(files[i]).stem().string() : scs[i].name;
            c.kernel = k;
            c.out = out / stem / kernel_label(k);
            c.steps = scs[i].steps.size();
            for (const auto& need : scs[i].needs)
                c.skip = need == "disk-from" ? "needs --disk-from: it boots on what an earlier run left"
                                             : "needs --control: it is steered during the run";
            o.cells.push_back(std::move(c));
        }
    }
    o.jobs = a.jobs ? a.jobs : std::max(1u, std::thread::hardware_concurrency());
    o.self = fs::canonical("/proc/self/exe");
    o.run_args = a.run_args;
    o.junit = a.junit;
    o.index = out / "index.html";
    o.progress = a.quiet ? run::MatrixOptions::Progress::quiet
                 : ::isatty(STDERR_FILENO) ? run::MatrixOptions::Progress::tty
                                           : run::MatrixOptions::Progress::lines;
    // The matrix folder is ours before any cell folder is made in it; each cell's run claims its own.
    const folder::Claim claim = folder::claim(out, folder::Kind::matrix, a.force);
    launch::reap_stale_temp();
    if (o.progress != run::MatrixOptions::Progress::quiet)
        fmt::print(stderr, "blkrig: {} runs ({} scenarios x {} kernels), {} at a time, into {}\n", o.cells.size(), files.size(),
                   kernels.empty() ? 1 : kernels.size(), o.jobs, out.string());
    return run::run_matrix(o);
}

fs::path default_device() {
    if (const char* d = std::getenv("BLKRIG_DEVICE"); d && *d) return d;
    const fs::path sibling = self_dir().parent_path() / "qemu-device" / "blkrig-device";  // build tree
    if (fs::exists(sibling)) return sibling;
    return self_dir() / "blkrig-device";  // installed side by side
}

// Records no device writes (trace::Trace::bad): with --strict the first is
// the error (exit 1, nothing printed), otherwise each is a warning and left out.
bool bad_records_fail(const std::string& file, const trace::Trace& t, bool strict) {
    if (t.bad.empty()) return false;
    if (strict) {
        fmt::print(stderr, "blkrig: trace {}: impossible {}\n", file, t.bad.front().describe());
        return true;
    }
    constexpr size_t kShown = 10;
    for (size_t i = 0; i < t.bad.size() && i < kShown; ++i)
        fmt::print(stderr, "blkrig: warning: trace {}: impossible {}; left out\n", file, t.bad[i].describe());
    if (t.bad.size() > kShown) fmt::print(stderr, "blkrig: warning: trace {}: {} more impossible records left out\n", file, t.bad.size() - kShown);
    return false;
}

int trace_dump(const std::string& file, const std::string& format, bool strict) {
    const auto t = trace::read_trace(file);
    if (bad_records_fail(file, t, strict)) return 1;
    const uint64_t t0 = t.header.t_start_ns;
    // Fault records follow their request; shown on the request they touched.
    std::map<uint64_t, const trace::FaultRecord*> faults;
    for (const auto& f : t.faults) faults[f.seq] = &f;
    for (const auto& e : t.order) {
        switch (e.kind) {
        case trace::RecordKind::request: {
            const auto& r = t.requests[e.index];
            auto f = faults.find(r.seq);
            if (format == "text") {
                std::cout << model::to_text(r, t0);
                if (f != faults.end()) std::cout << fmt::format(" fault rule {} {}", f->second->rule_id, trace::fault_action_name(f->second->action));
                std::cout << "\n";
            } else {
                auto j = model::to_json(r);
                if (f != faults.end()) j["fault"] = {{"rule", f->second->rule_id}, {"action", trace::fault_action_name(f->second->action)}};
                std::cout << j.dump() << "\n";
            }
            break;
        }
        case trace::RecordKind::fault:
            break;
        case trace::RecordKind::event: {
            const auto& ev = t.events[e.index];
            if (format == "text")
                std::cout << fmt::format("{:>8} q{} {:>12.3f}ms event {} head {}: {}\n", "-", ev.queue,
                                         static_cast<double>(ev.t_ns - std::min(t0, ev.t_ns)) / 1e6, trace::event_name(ev.code),
                                         ev.head, ev.text);
            else std::cout << model::to_json(ev).dump() << "\n";
            break;
        }
        case trace::RecordKind::dropped: {
            const auto& d = t.dropped[e.index];
            if (format == "text") std::cout << fmt::format("DROPPED {} records\n", d.count);
            else std::cout << nlohmann::json{{"kind", "dropped"}, {"count", d.count}, {"t_ns", d.t_ns}}.dump() << "\n";
            break;
        }
        case trace::RecordKind::marker: {
            const auto& m = t.markers[e.index];
            if (format == "text")
                std::cout << fmt::format("{:>8} q{} {:>12.3f}ms marker {}\n", m.seq, m.queue,
                                         static_cast<double>(m.t_ns - std::min(t0, m.t_ns)) / 1e6, m.index);
            else
                std::cout << nlohmann::json{{"kind", "marker"}, {"seq", m.seq}, {"index", m.index}, {"queue", m.queue}, {"head", m.head},
                                            {"t_ns", m.t_ns}}.dump()
                          << "\n";
            break;
        }
        case trace::RecordKind::end:
            if (format != "text")
                std::cout << nlohmann::json{{"kind", "end"}, {"requests", t.end->requests}, {"dropped", t.end->dropped}, {"t_ns", t.end->t_ns}}.dump()
                          << "\n";
            break;
        }
    }
    const std::string why = t.incompleteness();
    if (!why.empty()) {
        if (format != "text") std::cout << nlohmann::json{{"kind", "incomplete"}, {"reason", why}}.dump() << "\n";
        std::cerr << fmt::format("blkrig: warning: trace {} is incomplete: {}\n", file, why);
        if (strict) return 1;
    }
    return 0;
}

// `blkrig trace export`: exporter::write to stdout or --out; an incomplete
// trace is still exported, with a warning (exit 1 with --strict).
int trace_export(const std::string& file, const std::string& format, const std::string& out_path, const std::string& device, bool strict) {
    const auto f = exporter::parse_format(format);
    if (format.empty()) throw UsageError("trace export: give --format blkparse, perfetto or csv");
    if (!f) throw UsageError(fmt::format("--format {}: unknown format (blkparse, perfetto or csv)", format));
    const auto o = exporter::parse_device(device);
    if (!o) throw UsageError(fmt::format("--device {}: expected MAJOR,MINOR such as 254,0", device));
    if (auto twice = same_file_twice({{"FILE", file}, {"--out", out_path}})) throw UsageError(*twice);
    const auto t = trace::read_trace(file);
    if (bad_records_fail(file, t, strict)) return 1;
    if (out_path.empty()) {
        exporter::write(std::cout, t, *f, *o);
    } else {
        std::ofstream out(out_path, std::ios::trunc);
        if (out) exporter::write(out, t, *f, *o);
        if (!out.flush()) throw UsageError(fmt::format("--out {}: cannot write it: {}", out_path, std::strerror(errno)));
    }
    const std::string why = t.incompleteness();
    if (!why.empty()) {
        std::cerr << fmt::format("blkrig: warning: trace {} is incomplete: {}\n", file, why);
        if (strict) return 1;
    }
    return 0;
}

int trace_summary(const std::string& file, bool json, bool strict) {
    const auto t = trace::read_trace(file);
    if (bad_records_fail(file, t, strict)) return 1;
    const auto s = model::summarize(t);
    if (json) std::cout << model::to_json(s).dump(2) << "\n";
    else std::cout << model::to_text(s);
    return strict && !s.incomplete.empty() ? 1 : 0;
}

// `blkrig check`: the run folder's model, its findings, and the
// expectations (a file, or the [[expect]] tables of the run's scenario.toml).
int do_check(const std::string& dir, const std::string& expect_file, const std::string& format) {
    // A run cut short cannot hold its expectations; say so rather than what is missing.
    if (const auto why = folder::interruption(dir))
        throw UsageError(fmt::format("{}: {}; nothing to check (its verdict.json says what it had; run it again)", dir, *why));
    model::Run run;
    std::vector<checks::Expectation> expectations;
    try {
        run = model::load_run(dir);
        if (!expect_file.empty()) {
            expectations = checks::load_expectations(expect_file);
        } else {
            const fs::path sc = fs::path(dir) / "scenario.toml";
            if (!fs::exists(sc)) throw UsageError(fmt::format("{} has no scenario.toml: give an expectations file", dir));
            expectations = checks::parse_expectations(scenario::load_scenario(sc.string()).expects, sc.string());
        }
    } catch (const model::RunError& e) {
        throw UsageError(e.what());
    } catch (const scenario::ScenarioError& e) {
        throw UsageError(e.what());
    } catch (const checks::ExpectError& e) {
        throw UsageError(e.what());
    }
    std::vector<checks::CheckResult> results;
    try {
        results = checks::check_all(run, expectations);
    } catch (const checks::ExpectError& e) {
        throw UsageError(e.what());
    }
    const auto failed = static_cast<size_t>(std::count_if(results.begin(), results.end(), [](const auto& r) { return !r.ok; }));
    uint64_t matched = 0;
    for (const auto& is : run.issues) matched += is.request >= 0;
    if (format == "json") {
        nlohmann::json j = {{"run", fs::absolute(dir).string()}, {"requests", run.requests.size()}, {"guest_requests", run.issues.size()},
                            {"matched", matched}, {"findings", run.findings}, {"notes", run.notes},
                            {"results", nlohmann::json::array()}, {"passed", results.size() - failed}, {"failed", failed}};
        for (const auto& r : results) j["results"].push_back(checks::to_json(r));
        std::cout << j.dump(2) << "\n";
    } else {
        const auto added = std::count_if(run.steps.begin(), run.steps.end(), [](const auto& st) { return st.index < 0; });
        fmt::print("run {}: {} steps{}, {} device requests, {} of {} guest requests matched, {} guest events\n", dir,
                   run.steps.size() - static_cast<size_t>(added), added ? fmt::format(" (and {} the run added)", added) : "",
                   run.requests.size(), matched, run.issues.size(), run.guest.events.size());
        fmt::print("findings:{}\n", run.findings.empty() ? " none" : "");
        // Each finding or note is a line, then indented items.
        auto indent = [](const std::string& s) {
            std::string out = "  ";
            for (char c : s) out += c == '\n' ? std::string("\n  ") : std::string(1, c);
            return out;
        };
        for (const auto& f : run.findings) fmt::print("{}\n", indent(f));
        if (!run.notes.empty()) fmt::print("notes:\n");
        for (const auto& n : run.notes) fmt::print("{}\n", indent(n));
        for (const auto& r : results) fmt::print("{}\n", checks::to_text(r));
        if (results.empty()) fmt::print("no expectations to check\n");
        else fmt::print("{} check{}: {} passed, {} failed\n", results.size(), results.size() == 1 ? "" : "s", results.size() - failed, failed);
    }
    return failed ? 1 : 0;
}

int do_boot(launch::BootSpec spec, const std::string& kernel, bool force) {
    spec.kernel = resolve_kernel(kernel.empty() ? run::catalogue().default_name : kernel);
    if (auto twice = same_file_twice({{"--kernel", spec.kernel.string()}, {"--initrd", spec.initrd.string()}, {"--disk", spec.disk.string()}}))
        throw UsageError(*twice);
    if (const auto mem = host::mem_total(); mem && (uint64_t{spec.memory_mb} << 20) > *mem)
        throw UsageError(fmt::format("--memory {}: more than this host's {} MiB (MemTotal in /proc/meminfo)", spec.memory_mb, *mem >> 20));
    if (spec.device.empty()) spec.device = default_device();
    const folder::Claim claim = folder::claim(spec.out_dir, folder::Kind::run, force);
    launch::reap_stale_temp();
    fmt::print(stderr, "blkrig: booting {} on blkrig-device (disk {}, run folder {})\n", spec.kernel.string(), spec.disk.string(),
               spec.out_dir.string());
    const auto r = launch::boot(spec);
    if (r.outcome == launch::BootOutcome::interrupted) {
        fmt::print(stderr, "blkrig: {}; everything the boot started was stopped\n", r.message);
        return 130;
    }
    if (r.outcome != launch::BootOutcome::ok) {
        fmt::print(stderr, "blkrig: boot failed ({}): {}\n", launch::to_string(r.outcome), r.message);
        return 3;
    }
    fmt::print("guest powered off after {:.2f} s; device trace {}\n", r.seconds, (spec.out_dir / "trace.bin").string());
    const auto t = trace::read_trace((spec.out_dir / "trace.bin").string());
    std::cout << model::to_text(model::summarize(t));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"blkrig: boot a guest on blkrig-device and inspect what reached the device"};
    app.require_subcommand(1);

    auto* tr = app.add_subcommand("trace", "Read a device trace");
    tr->require_subcommand(1);
    std::string file, format = "jsonl";
    bool strict = false, json = false;
    auto* dump = tr->add_subcommand("dump", "One line per record (JSON lines or text)");
    dump->add_option("FILE", file, "Trace file written by blkrig-device --trace")->required();
    dump->add_option("--format", format, "jsonl or text")->check(CLI::IsMember({"jsonl", "text"}));
    dump->add_flag("--strict", strict, "Exit 1 if the trace is incomplete or holds a record no device writes");
    auto* summary = tr->add_subcommand("summary", "Counts, bytes and latency per operation");
    summary->add_option("FILE", file, "Trace file")->required();
    summary->add_flag("--json", json, "Machine-readable output");
    summary->add_flag("--strict", strict, "Exit 1 if the trace is incomplete or holds a record no device writes");
    std::string export_format, export_out, export_device = "254,0";
    auto* texport = tr->add_subcommand("export", "Convert a trace to blkparse text, Perfetto JSON or CSV (docs/trace-format.md)");
    texport->add_option("FILE", file, "Trace file")->required();
    texport->add_option("--format", export_format, "blkparse, perfetto or csv (checked by trace_export: a bad one exits 2)");
    texport->add_option("--out", export_out, "Write here instead of stdout");
    texport->add_option("--device", export_device, "blkparse's device column, MAJOR,MINOR")->capture_default_str();
    texport->add_flag("--strict", strict, "Exit 1 if the trace is incomplete or holds a record no device writes");

    launch::BootSpec spec;
    std::string kernel;  // empty: the catalogue's default, read when it is needed
    std::string out = "runs/boot";
    auto* boot = app.add_subcommand("boot", "Boot a kernel + initramfs with a disk on blkrig-device, wait for power-off, summarize the trace");
    boot->add_option("--kernel", kernel, "bzImage file, folder with vmlinuz, or catalogue name (default: the catalogue's default)");
    boot->add_option("--initrd", spec.initrd, "initramfs (its /init runs the guest's work and powers off)")->required();
    boot->add_option("--disk", spec.disk, "raw disk image served by blkrig-device")->required();
    boot->add_option("--out", out, "run folder: new, empty, or an earlier blkrig run folder with --force")->capture_default_str();
    bool boot_force = false;
    boot->add_flag("--force", boot_force, "replace an earlier blkrig run folder at --out (never a folder blkrig did not write)");
    boot->add_option("--append", spec.append, "extra kernel command line");
    boot->add_option("--timeout", spec.timeout_s, "seconds before the guest is stopped")->capture_default_str();
    boot->add_option("--memory", spec.memory_mb, "guest RAM in MiB")->capture_default_str();
    boot->add_option("--num-queues", spec.num_queues, "virtqueues")->capture_default_str()->check(CLI::Range(1, 64));
    boot->add_option("--queue-size", spec.queue_size, "virtqueue size")->capture_default_str();
    boot->add_option("--device", spec.device, "blkrig-device binary (default: next to this program, or $BLKRIG_DEVICE)");
    boot->add_option("--device-arg", spec.device_args, "extra blkrig-device option (repeatable), e.g. --device-arg=--seg-max=8");
    boot->add_option("--qemu", spec.qemu, "QEMU binary")->capture_default_str();
    LauncherOptions boot_launcher;
    boot_launcher.add_to(boot);

    std::vector<std::string> run_scenarios, run_kernels;
    std::string run_out;
    unsigned run_timeout = 0;
    auto* runc = app.add_subcommand("run", "Run scenarios: build each disk, boot the kernel with the guest agent, check the expectations");
    runc->add_option("SCENARIO", run_scenarios,
                     "scenario files (TOML, see docs/scenarios.md), folders of them or globs; several, or several --kernel, make a matrix")
        ->required();
    runc->add_option("--kernel", run_kernels,
                     "bzImage folder or catalogue name, repeatable (default: the scenario's, else the catalogue's default)");
    runc->add_option("--out", run_out, "run folder (default: runs/<scenario name>); for a matrix the folder of its run folders (default: runs/matrix)");
    runc->add_option("--timeout", run_timeout, "seconds before the guest is stopped (default: the scenario's)");
    bool run_force = false;
    runc->add_flag("--force", run_force, "replace an earlier blkrig run (or matrix) folder at --out (never a folder blkrig did not write)");
    unsigned run_jobs = 0;
    std::string run_junit;
    bool run_quiet = false;
    runc->add_option("--jobs,-j", run_jobs, "matrix: runs at a time (default: the CPU count)")->check(CLI::Range(1u, 256u));
    runc->add_option("--junit", run_junit, "write a JUnit XML file: a testcase per scenario x kernel (makes even one run a matrix)");
    runc->add_flag("--quiet,-q", run_quiet, "matrix: no progress, only the summary table");
    std::string run_modules, run_control, run_disk_from, run_faults;
    runc->add_option("--modules", run_modules, "with --kernel BZIMAGE: the build's modules folder (lib/modules/VERSION, after depmod)");
    runc->add_option("--control", run_control, "give the device a JSON-RPC control socket here (for blkrig fault ... during the run)");
    runc->add_option("--faults", run_faults, "more fault rules for the device: a file of rules, one per line, or what blkrig fault ... save wrote");
    runc->add_option("--disk-from", run_disk_from,
                     "boot on the disk an earlier run left (its run folder: disk.img, extents.json), e.g. what survived a power cut");
    bool run_no_extent_check = false;
    runc->add_flag("--no-extent-check", run_no_extent_check,
                   "skip the guest's FIEMAP check of the image's extents before step 0 (as [scenario] extent_check = false)");
    bool run_fresh_extent_check = false;
    runc->add_flag("--fresh-extent-check", run_fresh_extent_check,
                   "run the guest's extent check even when an earlier boot of this kernel found this same image's extents right");
    bool run_no_guest_trace = false;
    runc->add_flag("--no-guest-trace", run_no_guest_trace,
                   "trace nothing in the guest (no block events, no mpage functions; [[expect]] checks that need them fail)");
    bool run_record_writes = false;
    runc->add_flag("--record-writes", run_record_writes,
                   "the device also writes write-log.bin (every write, flush and marker) and the disk before the boot is kept as disk-before.img");
    LauncherOptions run_launcher;
    run_launcher.add_to(runc);

    std::string vm_scenario, vm_kernel, vm_out;
    auto* vmc = app.add_subcommand("vm", "A VM by hand: a scenario's kernel, disk and knobs with a shell on this terminal");
    vmc->add_option("--scenario", vm_scenario, "take disk, device and guest knobs from this scenario (its steps are not run)");
    vmc->add_option("--kernel", vm_kernel, "bzImage folder or catalogue name");
    vmc->add_option("--out", vm_out, "run folder (default: runs/vm or runs/<scenario>)");
    bool vm_force = false;
    vmc->add_flag("--force", vm_force, "replace an earlier blkrig run folder at --out");
    std::string vm_modules;
    vmc->add_option("--modules", vm_modules, "with --kernel BZIMAGE: the build's modules folder");

    std::string ctl_path, fault_rule, mark_text, save_path;
    uint32_t fault_id = 0;
    auto* fault = app.add_subcommand("fault", "Steer a running blkrig-device's faults over its control socket");
    fault->add_option("--control", ctl_path, "the device's --control socket")->required();
    fault->require_subcommand(1);
    auto* fadd = fault->add_subcommand("add", "Add a rule (docs/faults.md)");
    fadd->add_option("RULE", fault_rule, "e.g. \"ioerr op=read sector=264..271\"")->required();
    auto* fremove = fault->add_subcommand("remove", "Remove a rule");
    fremove->add_option("ID", fault_id, "rule id")->required();
    auto* flist = fault->add_subcommand("list", "Rules with their matched/fired counters");
    auto* fclear = fault->add_subcommand("clear", "Remove every rule");
    auto* fmark = fault->add_subcommand("mark", "Put a mark into the device trace");
    fmark->add_option("TEXT", mark_text, "what the mark says");
    auto* fstats = fault->add_subcommand("stats", "Per-op counts, bytes, errors, latency");
    auto* fsave = fault->add_subcommand("save", "Write the live rule set as replayable JSON-RPC calls");
    fsave->add_option("FILE", save_path, "output file (JSON lines)")->required();
    auto* fheld = fault->add_subcommand("held", "Requests a hold rule keeps pending");
    std::optional<uint64_t> release_seq;
    std::optional<uint32_t> release_rule;
    auto* frelease = fault->add_subcommand("release", "Complete held requests (all, or --seq / --rule)");
    frelease->add_option("--seq", release_seq, "the held request with this seq");
    frelease->add_option("--rule", release_rule, "the requests held by this rule");
    std::string cut_mode = "drop_all";
    uint64_t cut_seed = 0;
    double cut_share = 0.5;
    auto* fcut = fault->add_subcommand("power-cut", "Cut the power: lose unflushed writes (device started with --crash-model)");
    fcut->add_option("--mode", cut_mode, "drop_all, drop_random or keep_all")->capture_default_str()->check(CLI::IsMember({"drop_all", "drop_random", "keep_all"}));
    fcut->add_option("--seed", cut_seed, "drop_random: the seed")->capture_default_str();
    fcut->add_option("--share", cut_share, "drop_random: the chance each unflushed write is lost")->capture_default_str()->check(CLI::Range(0.0, 1.0));
    auto* fon = fault->add_subcommand("power-on", "Turn the device back on, serving what survived");

    std::string check_dir, check_expect, check_format = "text";
    auto* checkc = app.add_subcommand("check", "Check a run folder's requests against expectations (exit 0 all held, 1 some failed, 2 bad input)");
    checkc->add_option("RUN_DIR", check_dir, "run folder written by blkrig run")->required();
    checkc->add_option("EXPECTATIONS", check_expect, "TOML file of [[expect]] tables (default: the run's scenario.toml)");
    checkc->add_option("--format", check_format, "text or json")->check(CLI::IsMember({"text", "json"}));

    std::vector<std::string> report_dirs;
    std::string report_out;
    auto* reportc = app.add_subcommand("report", "One self-contained HTML page per run folder (RUN_DIR/report.html), and an index for several");
    reportc->add_option("RUN_DIR", report_dirs, "run folders written by blkrig run")->required();
    reportc->add_option("--out", report_out, "the page for one run folder, the index for several (default: index.html)");

    CrashArgs crash_args;
    auto* crashc = app.add_subcommand("crash", "Record a scenario's writes once, then build and check every crash state they allow (docs/crash.md)");
    crashc->add_option("SCENARIO", crash_args.scenario, "scenario file (with [[crash.promise]] tables)")->required();
    crashc->add_option("--states", crash_args.states, "flushes, all (the default) or random:N")->capture_default_str();
    crashc->add_option("--seed", crash_args.seed, "the seed of the chosen subsets")->capture_default_str();
    crashc->add_option("--jobs,-j", crash_args.jobs, "states checked at a time (default: the CPU count)")->check(CLI::Range(1u, 256u));
    crashc->add_option("--out", crash_args.out, "the crash folder (default: runs/crash/<scenario>)");
    crashc->add_option("--kernel", crash_args.kernel, "the recording run's and the guest checks' kernel (catalogue name)");
    crashc->add_option("--boot", crash_args.boot,
                       "which states a guest also boots on (mount, read each promised file): none, flushes (one per epoch), all "
                       "(default: the scenario's [crash.check] boot, else none)")
        ->check(CLI::IsMember({"none", "flushes", "all"}));
    crashc->add_option("--record-from", crash_args.record_from, "check the states of an earlier recording (OUT/record) instead of recording again");
    crashc->add_option("--only", crash_args.only, "build and check this state alone, and keep its disk in OUT/state-N (the reproduce lines use it)");
    crashc->add_flag("--force", crash_args.force, "replace an earlier crash folder at --out");

    auto* kern = app.add_subcommand("kernel", "The kernel catalogue");
    kern->require_subcommand(1);
    auto* klist = kern->add_subcommand("list", "Catalogue kernels (guest-driver/kernels/catalogue.toml) and whether they are fetched");
    bool klist_json = false;
    klist->add_flag("--json", klist_json, "a JSON array: name, summary, suite, package, default, fetched, release, dir, extra_modules");
    std::string fetch_name;
    auto* kfetch = kern->add_subcommand("fetch", "Download a catalogue kernel from Debian's archive into the cache (and build extra modules for it)");
    kfetch->add_option("NAME", fetch_name, "catalogue name")->required();
    std::vector<std::string> fetch_extra;
    kfetch->add_option("--extra-modules", fetch_extra,
                       "also build these drivers out of tree against the kernel's headers (ext2: fs/ext2 as module ext2mpage)")
        ->delimiter(',');

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help is 0; every bad argument is 2 (CLI11's own codes, 104-109, are not ours).
        return app.exit(e) == 0 ? 0 : 2;
    }
    try {
        if (dump->parsed()) return trace_dump(file, format, strict);
        if (summary->parsed()) return trace_summary(file, json, strict);
        if (texport->parsed()) return trace_export(file, export_format, export_out, export_device, strict);
        if (checkc->parsed()) return do_check(check_dir, check_expect, check_format);
        if (crashc->parsed()) return do_crash(crash_args);
        if (reportc->parsed()) {
            try {
                for (const auto& p : report::report({report_dirs.begin(), report_dirs.end()}, report_out)) fmt::print("{}\n", p.string());
                return 0;
            } catch (const report::ReportError& e) {
                fmt::print(stderr, "blkrig: {}\n", e.what());
                return e.exit_code;
            }
        }
        if (runc->parsed()) {
            const bool several = run_scenarios.size() > 1 || run_kernels.size() > 1 ||
                                 std::any_of(run_scenarios.begin(), run_scenarios.end(), [](const std::string& s) {
                                     std::error_code ec;
                                     return fs::is_directory(s, ec) || (s.find_first_of("*?[") != std::string::npos && !fs::exists(s, ec));
                                 });
            if (!several && run_junit.empty())
                return do_run(run_scenarios.front(), run_kernels.empty() ? std::string() : run_kernels.front(), run_out, run_timeout, false,
                              run_modules, run_control, run_disk_from, !run_no_extent_check, !run_no_guest_trace, run_faults,
                              run_launcher.launcher(), run_launcher.libvirt_uri, run_force, run_record_writes, run_fresh_extent_check);
            for (const auto& [given, name] : {std::pair{!run_control.empty(), "--control"}, std::pair{!run_disk_from.empty(), "--disk-from"},
                                              std::pair{!run_modules.empty(), "--modules"}, std::pair{run_record_writes, "--record-writes"}})
                if (given) throw UsageError(fmt::format("{} is for one run, not a matrix of them", name));
            MatrixArgs m{run_scenarios, run_kernels, run_out, run_jobs, run_junit, run_quiet, {}, run_force};
            if (run_timeout) m.run_args.insert(m.run_args.end(), {"--timeout", std::to_string(run_timeout)});
            if (run_no_extent_check) m.run_args.push_back("--no-extent-check");
            if (run_fresh_extent_check) m.run_args.push_back("--fresh-extent-check");
            if (run_no_guest_trace) m.run_args.push_back("--no-guest-trace");
            if (run_launcher.launcher() == launch::Launcher::libvirt) {
                // Each run gets an embedded root of its own unless one URI is given for all.
                m.run_args.insert(m.run_args.end(), {"--launcher", "libvirt"});
                if (!run_launcher.libvirt_uri.empty()) m.run_args.insert(m.run_args.end(), {"--libvirt-uri", run_launcher.libvirt_uri});
            }
            if (!run_faults.empty()) {
                check_faults_file(run_faults);
                m.run_args.insert(m.run_args.end(), {"--faults", fs::absolute(run_faults).string()});
            }
            return do_matrix(m);
        }
        if (vmc->parsed())
            return do_run(vm_scenario, vm_kernel, vm_out, 0, true, vm_modules, {}, {}, true, true, {}, launch::Launcher::qemu, {}, vm_force);
        if (fault->parsed()) {
            if (fadd->parsed()) {
                const auto r = cli::control_call(ctl_path, "fault.add", {{"rule", fault_rule}});
                fmt::print("rule {}: {}\n", r["id"].get<uint32_t>(), r["rule"].get<std::string>());
            } else if (fremove->parsed()) {
                cli::control_call(ctl_path, "fault.remove", {{"id", fault_id}});
            } else if (flist->parsed()) {
                fmt::print("{:>4} {:>10} {:>10}  {}\n", "id", "matched", "fired", "rule");
                for (const auto& r : cli::control_call(ctl_path, "fault.list", nlohmann::json::object()))
                    fmt::print("{:>4} {:>10} {:>10}  {}\n", r["id"].get<uint32_t>(), r["matched"].get<uint64_t>(), r["fired"].get<uint64_t>(),
                               r["rule"].get<std::string>());
            } else if (fclear->parsed()) {
                cli::control_call(ctl_path, "fault.clear", nlohmann::json::object());
            } else if (fmark->parsed()) {
                cli::control_call(ctl_path, "trace.mark", {{"text", mark_text}});
            } else if (fstats->parsed()) {
                std::cout << cli::control_call(ctl_path, "stats", nlohmann::json::object()).dump(2) << "\n";
            } else if (fheld->parsed()) {
                fmt::print("{:>8} {:>5} {:>5} {:<6} {:>12} {:>9}\n", "seq", "queue", "rule", "op", "sector", "held_ms");
                for (const auto& h : cli::control_call(ctl_path, "request.held", nlohmann::json::object()))
                    fmt::print("{:>8} {:>5} {:>5} {:<6} {:>12} {:>9}\n", h["seq"].get<uint64_t>(), h["queue"].get<uint32_t>(), h["rule"].get<uint32_t>(),
                               h["op"].get<std::string>(), h["sector"].get<uint64_t>(), h["held_ms"].get<uint64_t>());
            } else if (frelease->parsed()) {
                nlohmann::json p = nlohmann::json::object();
                if (release_seq) p["seq"] = *release_seq;
                if (release_rule) p["rule"] = *release_rule;
                const auto r = cli::control_call(ctl_path, "request.release", p);
                fmt::print("released {} request(s)\n", r["released"].size());
            } else if (fcut->parsed()) {
                std::cout << cli::control_call(ctl_path, "power.cut", {{"mode", cut_mode}, {"seed", cut_seed}, {"share", cut_share}}).dump(2) << "\n";
            } else if (fon->parsed()) {
                cli::control_call(ctl_path, "power.on", nlohmann::json::object());
            } else if (fsave->parsed()) {
                const auto saved = cli::control_call(ctl_path, "save_config", nlohmann::json::object());
                std::ofstream out(save_path);
                for (const auto& c : saved["calls"]) out << c.dump() << "\n";
                if (!out) throw UsageError("cannot write " + save_path);
            }
            return 0;
        }
        if (klist->parsed()) return kernel_list(klist_json);
        if (kfetch->parsed()) return kernel_fetch(fetch_name, fetch_extra);
        if (boot->parsed()) {
            spec.out_dir = out;
            spec.launcher = boot_launcher.launcher();
            spec.libvirt_uri = boot_launcher.libvirt_uri;
            return do_boot(spec, kernel, boot_force);
        }
    } catch (const UsageError& e) {
        fmt::print(stderr, "blkrig: {}\n", e.what());
        return 2;
    } catch (const cli::CallRefused& e) {
        fmt::print(stderr, "blkrig: {}\n", e.what());
        return 2;
    } catch (const folder::FolderError& e) {
        fmt::print(stderr, "blkrig: {}\n", e.what());
        return e.exit_code;
    } catch (const trace::ReadError& e) {
        fmt::print(stderr, "blkrig: {}\n", e.what());
        return 2;
    } catch (const launch::LaunchError& e) {
        fmt::print(stderr, "blkrig: {}\n", e.what());
        return 3;
    } catch (const std::exception& e) {
        fmt::print(stderr, "blkrig: {}\n", e.what());
        return 3;
    }
    return 2;
}
