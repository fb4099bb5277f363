// blkrig-device: a vhost-user virtio-blk back end that records every request.
// main() reads like the table of contents: options, store, trace, device, serve.
#include "blk/device.hpp"
#include "control/methods.hpp"
#include "faults/engine.hpp"
#include "faults/rule_file.hpp"
#include "common/host.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "store/store.hpp"
#include "trace/writer.hpp"
#include "vhost_user/server.hpp"
#include "vhost_user/session.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <csignal>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iterator>
#include <fstream>
#include <iostream>

using namespace blkrig;

namespace {

struct Options {
    std::string socket_path;
    int fd = -1;
    bool print_capabilities = false;
    std::string blk_file;
    uint64_t ram_size = 0;
    bool read_only = false;
    bool snapshot = false;
    bool direct = false;
    std::string trace_path;
    bool trace_continue = false;
    bool once = false;
    std::string io_threads = "per-queue";
    std::string io_engine = "uring";
    uint32_t poll_us = 64;
    std::vector<std::string> fault_rules;
    std::string control_path;
    std::string faults_file;
    std::string log_level = "info";
    blk::Geometry geo;
    std::string write_cache = "on";
    std::string discard = "on";
    std::string write_zeroes = "on";
    bool crash_model = false;
    std::string write_log;
    std::string power_cut;
};

void add_options(CLI::App& app, Options& o) {
    app.add_option("--socket-path", o.socket_path, "Listen for the front end on this Unix socket");
    app.add_option("--fd", o.fd, "Serve an inherited socket (listening or connected) instead of --socket-path");
    app.add_flag("--print-capabilities", o.print_capabilities, "Print the back end's capabilities as JSON and exit");
    app.add_option("--blk-file", o.blk_file, "Raw disk image (file or block device)");
    app.add_option("--ram", o.ram_size, "Serve a zero-filled RAM disk of this size instead of an image (e.g. 64M)")
        ->transform(CLI::AsSizeValue(false));
    app.add_flag("--read-only", o.read_only, "Advertise VIRTIO_BLK_F_RO and refuse writes");
    app.add_flag("--snapshot", o.snapshot, "Leave the image untouched: writes go to a RAM overlay");
    app.add_flag("--direct", o.direct, "Open the image with O_DIRECT");
    app.add_option("--trace", o.trace_path, "Write the request trace to this file");
    app.add_flag("--trace-continue", o.trace_continue,
                 "Continue the --trace file an earlier device process left (same seq space, a restart record); every record is "
                 "written through at once, so a killed device loses none");
    app.add_flag("--once", o.once, "Exit when the first front end disconnects");
    app.add_option("--io-threads", o.io_threads, "per-queue (a thread per virtqueue) or single (one epoll thread for all)")
        ->check(CLI::IsMember({"per-queue", "single"}));
    app.add_option("--io-engine", o.io_engine,
                   "uring (each queue keeps requests in flight on io_uring; a RAM store, or a host without io_uring, runs them "
                   "synchronously) or sync (every request on its queue thread)")
        ->check(CLI::IsMember({"uring", "sync"}));
    app.add_option("--poll-us", o.poll_us,
                   "Busy-poll each queue up to this many microseconds before sleeping, adapting to how fast requests come "
                   "(0: never; per-queue threads only)")
        ->check(CLI::Range(0, 1000));
    app.add_option("--log-level", o.log_level, "debug, info, warn or error")->check(CLI::IsMember({"debug", "info", "warn", "error"}));
    app.add_option("--num-queues", o.geo.num_queues, "Queues offered (config num_queues, GET_QUEUE_NUM)")->check(CLI::Range(1, 64));
    app.add_option("--queue-size", o.geo.queue_size, "Largest ring size accepted")->check(CLI::Range(1, 32768));
    app.add_option("--logical-block-size", o.geo.logical_block_size, "Config blk_size")->check(CLI::IsMember({512, 1024, 2048, 4096}));
    app.add_option("--seg-max", o.geo.seg_max, "Config seg_max: segments per request")->check(CLI::Range(1, 1024));
    app.add_option("--size-max", o.geo.size_max, "Config size_max: bytes per segment (0: not advertised)")
        ->transform(CLI::AsSizeValue(false));
    app.add_option("--write-cache", o.write_cache, "Volatile write cache (FLUSH, CONFIG_WCE): on or off")->check(CLI::IsMember({"on", "off"}));
    app.add_option("--discard", o.discard, "Offer DISCARD: on or off")->check(CLI::IsMember({"on", "off"}));
    app.add_option("--write-zeroes", o.write_zeroes, "Offer WRITE_ZEROES: on or off")->check(CLI::IsMember({"on", "off"}));
    app.add_option("--marker-sectors", o.geo.marker_sectors,
                   "Reserve this many sectors past the image's end as the marker region (reads there are traced as markers)")
        ->check(CLI::Range(0, 1 << 20));
    app.add_option("--fault", o.fault_rules, "A fault rule (docs/faults.md), e.g. \"ioerr op=read sector=264..271\"; repeatable");
    app.add_option("--faults", o.faults_file, "A file of fault rules, one per line (# comments), or the fault.add calls `blkrig fault ... save` wrote");
    app.add_option("--control", o.control_path, "JSON-RPC 2.0 control socket (created 0600): fault.add/remove/list/clear, trace.mark, stats, save_config");
    app.add_flag("--crash-model", o.crash_model,
                 "Keep writes not covered by a FLUSH so a power cut (power.cut, --power-cut) can lose them (docs/faults.md)");
    app.add_option("--write-log", o.write_log, "Also append every write, flush and marker to this file in dm-log-writes format (implies --crash-model)");
    app.add_option("--power-cut", o.power_cut,
                   "Cut the power when the guest reads a marker: marker=N[,mode=drop_all|drop_random|keep_all][,seed=S][,share=F][,report=PATH]");
    app.add_option("--serial", o.geo.serial, "Serial returned by GET_ID (up to 20 bytes)");
}

void print_capabilities() {
    nlohmann::json caps = {{"type", "block"}, {"features", {"read-only", "blk-file"}}};
    std::cout << caps.dump(2) << "\n";
}

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct GivenRule {
    std::string where;  // "--fault" or "FILE:LINE"
    faults::Rule rule;
};

// Rules from --fault and --faults; a bad one is a usage error naming where.
std::vector<GivenRule> parse_faults(const Options& o) {
    std::vector<GivenRule> rules;
    for (const auto& r : o.fault_rules) {
        auto parsed = faults::parse_rule(r);
        if (auto* e = std::get_if<faults::RuleError>(&parsed))
            throw UsageError(fmt::format("--fault:{}: {} (in '{}')", e->column, e->message, r));
        rules.push_back({"--fault", std::get<faults::Rule>(parsed)});
    }
    if (!o.faults_file.empty()) {
        std::ifstream in(o.faults_file, std::ios::binary);
        if (!in) throw UsageError(fmt::format("--faults {}: cannot read it: {}", o.faults_file, std::strerror(errno)));
        const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        auto parsed = faults::parse_rule_file(text);
        if (auto* e = std::get_if<faults::RuleFileError>(&parsed)) throw UsageError(e->describe(o.faults_file));
        for (const auto& fr : std::get<std::vector<faults::FileRule>>(parsed))
            rules.push_back({fmt::format("--faults {}:{}", o.faults_file, fr.line), fr.rule});
    }
    return rules;
}

// Once the geometry is known: a rule that could never fire is a usage
// error, saying where the capacity and the queue count come from.
void load_faults(const std::vector<GivenRule>& rules, const Options& o, const std::string& disk, faults::Engine& engine) {
    for (const auto& g : rules) {
        if (auto why = faults::never_fires(g.rule, o.geo.capacity_sectors, o.geo.num_queues))
            throw UsageError(fmt::format("{}: {} (in '{}'; the capacity is {} plus --marker-sectors {}, the queues --num-queues {})", g.where,
                                         *why, faults::to_text(g.rule), disk, o.geo.marker_sectors, o.geo.num_queues));
        const uint32_t id = engine.add(g.rule);
        log(LogLevel::info, "fault rule {}: {}", id, faults::to_text(g.rule));
    }
}

// A path given for two jobs (the trace written over the image, the control
// socket on the vhost-user socket) is a usage error; so is a socket path
// holding a file or a live socket. Checked before anything is created.
void check_paths(const Options& o, const blk::PowerCutPlan& plan) {
    if (auto twice = same_file_twice({{"--socket-path", o.socket_path},
                                      {"--control", o.control_path},
                                      {"--blk-file", o.blk_file},
                                      {"--trace", o.trace_path},
                                      {"--write-log", o.write_log},
                                      {"--faults", o.faults_file},
                                      {"--power-cut report=", plan.report_path}}))
        throw UsageError(*twice);
    for (const auto& [option, path] : {std::pair{"--socket-path", o.socket_path}, std::pair{"--control", o.control_path}})
        if (!path.empty())
            if (auto why = socket_path_problem(option, path)) throw UsageError(*why);
}

// --fd N must be an open socket we inherited.
void check_fd(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        throw UsageError(fmt::format("--fd {}: not an open file descriptor ({}); pass the socket to this program", fd, std::strerror(errno)));
    if (!S_ISSOCK(st.st_mode)) throw UsageError(fmt::format("--fd {}: not a socket", fd));
}

// "marker=9,mode=drop_random,seed=3,share=0.5,report=/x.json"
blk::PowerCutPlan parse_power_cut(const std::string& spec) {
    blk::PowerCutPlan p;
    size_t pos = 0;
    while (pos <= spec.size()) {
        size_t comma = spec.find(',', pos);
        if (comma == std::string::npos) comma = spec.size();
        const std::string term = spec.substr(pos, comma - pos);
        const size_t eq = term.find('=');
        const std::string key = term.substr(0, eq), value = eq == std::string::npos ? "" : term.substr(eq + 1);
        auto bad = [&](const std::string& want) { return UsageError(fmt::format("--power-cut: column {}: {}, got '{}'", pos + 1, want, term)); };
        try {
            size_t used = 0;
            if (key == "marker") {
                p.at_marker = static_cast<int64_t>(std::stoull(value, &used));
                if (used != value.size()) throw bad("expected marker=N (a marker index)");
            } else if (key == "mode") {
                if (value == "drop_all") p.mode = store::CutMode::drop_all;
                else if (value == "drop_random") p.mode = store::CutMode::drop_random;
                else if (value == "keep_all") p.mode = store::CutMode::keep_all;
                else throw bad("expected mode=drop_all, drop_random or keep_all");
            } else if (key == "seed") {
                p.seed = std::stoull(value, &used);
                if (used != value.size()) throw bad("expected seed=N");
            } else if (key == "share") {
                p.share = std::stod(value, &used);
                if (used != value.size() || !(p.share >= 0.0 && p.share <= 1.0)) throw bad("expected share=F with 0 <= F <= 1");
            } else if (key == "report") {
                if (value.empty()) throw bad("expected report=PATH");
                p.report_path = value;
            } else {
                throw bad("expected marker=, mode=, seed=, share= or report=");
            }
        } catch (const std::logic_error&) {  // stoull/stod on a non-number
            throw bad(fmt::format("expected a number after {}=", key));
        }
        pos = comma + 1;
    }
    if (p.at_marker < 0) throw UsageError("--power-cut: give marker=N (the marker read that cuts the power)");
    return p;
}

std::unique_ptr<store::Store> open_store(const Options& o) {
    if (!o.blk_file.empty() && o.ram_size) throw UsageError("give either --blk-file or --ram, not both");
    if (o.blk_file.empty() && !o.ram_size) throw UsageError("no disk: give --blk-file PATH or --ram SIZE");
    if (o.ram_size) {
        // The RAM disk is reserved lazily: without this check it fails only when the guest has filled the host.
        if (const auto mem = host::mem_total(); mem && o.ram_size > *mem)
            throw UsageError(fmt::format("--ram {}: more than this host's memory ({} bytes, MemTotal in /proc/meminfo)", o.ram_size, *mem));
        return store::make_ram(o.ram_size);
    }
    if (o.snapshot) return store::make_overlay(store::open_file(o.blk_file, true, o.direct));
    return store::open_file(o.blk_file, o.read_only, o.direct);
}

nlohmann::json describe(const Options& o, const store::Store& s) {
    const auto& g = o.geo;
    return {{"program", "blkrig-device"},
            {"store", s.describe()},
            {"capacity_sectors", g.capacity_sectors},
            {"marker_sectors", g.marker_sectors},
            {"marker_base_sector", g.capacity_sectors - g.marker_sectors},
            {"logical_block_size", g.logical_block_size},
            {"seg_max", g.seg_max},
            {"size_max", g.size_max},
            {"num_queues", g.num_queues},
            {"queue_size", g.queue_size},
            {"write_cache", g.write_cache},
            {"read_only", g.read_only},
            {"discard", g.discard},
            {"write_zeroes", g.write_zeroes},
            {"snapshot", o.snapshot},
            {"direct", o.direct},
            {"io_threads", o.io_threads},
            {"io_engine", o.io_engine},
            {"poll_us", o.poll_us},
            {"crash_model", o.crash_model || !o.write_log.empty() || !o.power_cut.empty()}};
}

// SIGINT/SIGTERM/SIGHUP become a readable fd that every wait also polls, so
// shutdown is orderly: sessions end, queue threads join, the trace is closed.
int make_stop_fd() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    return ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

int run(Options& o) {
    if (o.print_capabilities) {
        print_capabilities();
        return 0;
    }
    if (o.log_level == "debug") log_threshold() = static_cast<int>(LogLevel::debug);
    else if (o.log_level == "warn") log_threshold() = static_cast<int>(LogLevel::warn);
    else if (o.log_level == "error") log_threshold() = static_cast<int>(LogLevel::error);
    if (o.socket_path.empty() == (o.fd < 0)) throw UsageError("give exactly one of --socket-path PATH or --fd N");
    if (o.snapshot && o.blk_file.empty()) throw UsageError("--snapshot needs --blk-file");
    if (o.fd >= 0) check_fd(o.fd);
    blk::PowerCutPlan plan;
    if (!o.power_cut.empty()) plan = parse_power_cut(o.power_cut);
    check_paths(o, plan);
    const auto rules = parse_faults(o);
    faults::Engine engine;

    o.geo.read_only = o.read_only;
    o.geo.write_cache = o.write_cache == "on";
    o.geo.discard = o.discard == "on";
    o.geo.write_zeroes = o.write_zeroes == "on";
    const int stop_fd = make_stop_fd();
    if (stop_fd < 0) throw std::runtime_error(fmt::format("signalfd: {}", std::strerror(errno)));

    auto store = open_store(o);
    const uint64_t lbs = o.geo.logical_block_size;
    if (store->size() % lbs)
        log(LogLevel::warn, "disk size {} is not a multiple of the logical block size {}; the tail is not visible", store->size(), lbs);
    o.geo.capacity_sectors = store->size() / lbs * lbs / blk::kSectorSize;
    if (o.geo.capacity_sectors == 0) throw UsageError(fmt::format("disk {} is smaller than one block", store->describe()));
    if (o.geo.marker_sectors % (lbs / blk::kSectorSize))
        throw UsageError(fmt::format("--marker-sectors {} is not a whole number of {}-byte blocks", o.geo.marker_sectors, lbs));
    o.geo.capacity_sectors += o.geo.marker_sectors;
    load_faults(rules, o, fmt::format("{} ({} bytes)", store->describe(), store->size()), engine);

    std::unique_ptr<trace::Writer> tw;
    if (!o.trace_path.empty()) {
        trace::FileHeader h{};
        h.t_start_ns = monotonic_ns();
        h.capacity_sectors = o.geo.capacity_sectors;
        h.logical_block_size = o.geo.logical_block_size;
        h.num_queues = o.geo.num_queues;
        if (o.trace_continue) tw = trace::Writer::open_continued(o.trace_path, h, describe(o, *store).dump());
        else tw = std::make_unique<trace::Writer>(o.trace_path, h, describe(o, *store).dump());
    }
    std::unique_ptr<store::WriteLog> wlog;
    if (o.crash_model || !o.write_log.empty() || !o.power_cut.empty()) {
        if (!o.geo.write_cache) log(LogLevel::warn, "--crash-model with --write-cache off: every write is durable, a power cut loses nothing");
        wlog = std::make_unique<store::WriteLog>(*store, o.write_log);
    }
    blk::BlkDevice dev(o.geo, *store, tw.get(), &engine, wlog.get(), plan);
    dev.use_async(o.io_engine == "uring");
    if (tw && tw->continued()) {
        dev.seq_at_least(tw->next_seq());
        const std::string text = fmt::format("device restarted (pid {}): the trace continues at seq {} after {} request(s)", ::getpid(),
                                             tw->next_seq(), tw->requests());
        log(LogLevel::info, "{}", text);
        dev.note(trace::EventCode::restart, 0, text);
    }
    std::unique_ptr<virtio::SharedLoop> loop;
    if (o.io_threads == "single") loop = std::make_unique<virtio::SharedLoop>();
    const vhost_user::ServeOptions serve{o.once, {loop.get(), uint64_t{o.poll_us} * 1000}};
    std::unique_ptr<control::Server> ctl;
    if (!o.control_path.empty()) ctl = std::make_unique<control::Server>(o.control_path, control::device_methods(engine, dev, tw.get()));

    if (o.fd >= 0) {
        if (vhost_user::is_listening_socket(o.fd)) {
            UniqueFd lfd(o.fd);
            vhost_user::serve_listening(lfd.get(), stop_fd, dev, serve);
        } else {
            vhost_user::serve_connected(UniqueFd(o.fd), stop_fd, dev, serve);
        }
    } else {
        UniqueFd lfd = vhost_user::listen_at(o.socket_path);
        // Removed on every way out, unless another program replaced it.
        struct Remove {
            OwnSocket s;
            ~Remove() { remove_own_socket(s); }
        } remove{own_socket(o.socket_path)};
        log(LogLevel::info, "serving {} on {} ({} sectors, {} queue(s))", store->describe(), o.socket_path, o.geo.capacity_sectors,
            o.geo.num_queues);
        vhost_user::serve_listening(lfd.get(), stop_fd, dev, serve);
    }
    ctl.reset();  // no control calls once the trace is closing
    // Sessions are over: a request still in the inflight region will never
    // complete in this process. The trace says so rather than leave its seq missing.
    if (const size_t n = dev.record_unfinished())
        log(LogLevel::info, "{} request(s) were left in flight, never completed, as the device ended: traced as unfinished", n);
    int rc = 0;
    if (tw) {
        tw->close();
        log(LogLevel::info, "trace {}: {} requests, {} dropped", o.trace_path, tw->requests(), tw->dropped());
        // A trace that lost records to a failed write is a failed run.
        if (!tw->write_error().empty()) {
            log(LogLevel::error, "{}: the trace is incomplete", tw->write_error());
            rc = 1;
        }
    }
    if (dev.report_failed()) rc = 1;
    if (wlog && !wlog->export_error().empty()) {
        log(LogLevel::error, "{}: the write log is incomplete", wlog->export_error());
        rc = 1;
    }
    ::close(stop_fd);
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"blkrig-device: a vhost-user virtio-blk device that records every request"};
    Options o;
    add_options(app, o);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help and --version are 0; every bad argument is 2 (CLI11's own codes are not ours).
        return app.exit(e) == 0 ? 0 : 2;
    }
    try {
        return run(o);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "blkrig-device: %s\n", e.what());
        return 2;
    } catch (const PathError& e) {
        std::fprintf(stderr, "blkrig-device: %s\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "blkrig-device: %s\n", e.what());
        return 1;
    }
}
