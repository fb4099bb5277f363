#include "crash/crash.hpp"

#include "agent_core/pattern.hpp"
#include "crash/guest_check.hpp"
#include "crash/log_writes.hpp"
#include "common/markers.hpp"
#include "folder/digest.hpp"
#include "folder/run_folder.hpp"
#include "launch/process.hpp"
#include "report/crash_page.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

namespace blkrig::crash {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Promises are checked block by block: a filesystem block, or in a state
// with a torn write a sector (a device writes whole sectors, and a torn
// 4 KiB write leaves a block of old and new sectors: not garbage).
constexpr uint64_t kBlock = 4096, kSectorBlock = 512;

struct RigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::vector<uint8_t> slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw RigError(fmt::format("cannot read {}: {}", p.string(), std::strerror(errno)));
    return {std::istreambuf_iterator<char>(in), {}};
}

// The state's disk: the disk before the run, then the writes of every
// epoch before the state's, then the kept ones of its own, in log order.
void build_image(const fs::path& before, const fs::path& img, const std::vector<uint8_t>& log, const WriteLogFile& wl,
                 const std::vector<Epoch>& epochs, const State& s) {
    try {
        folder::copy_new(before, img);  // a reflink, or the data parts only
    } catch (const folder::FolderError& e) {
        throw RigError(e.what());
    }
    const int fd = ::open(img.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) throw RigError(fmt::format("cannot open {}: {}", img.string(), std::strerror(errno)));
    // sectors: how much of the write reached the disk (all of it, but for a torn one).
    auto apply = [&](size_t i, uint64_t sectors = UINT64_MAX) {
        const auto& e = wl.entries[i];
        const uint64_t bytes = std::min(e.nr_sectors, sectors) * 512, off = e.sector * 512;
        if (e.kind == LogEntry::Kind::discard) {
            // What the device's store does with a discard: the range reads as zeros.
            if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(bytes)) != 0)
                throw RigError(fmt::format("{}: discard at sector {}: {}", img.string(), e.sector, std::strerror(errno)));
            return;
        }
        if (::pwrite(fd, log.data() + e.data_offset, bytes, static_cast<off_t>(off)) != static_cast<ssize_t>(bytes))
            throw RigError(fmt::format("{}: write at sector {}: {}", img.string(), e.sector, std::strerror(errno)));
    };
    try {
        for (size_t ep = 0; ep < s.epoch; ++ep)
            for (size_t i : epochs[ep].writes) apply(i);
        for (size_t k : s.kept) apply(epochs[s.epoch].writes[k]);
        if (s.torn_write >= 0) apply(epochs[s.epoch].writes[static_cast<size_t>(s.torn_write)], s.torn_sectors);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
}

struct Fsck {
    std::string verdict;  // clean | errors | skipped
    std::string command;  // the one that gave the verdict
    std::string output;   // its first lines
};


// Each line of a tool's output, leading spaces trimmed; f returns false to stop.
template <class F>
void each_line(const std::string& out, F f) {
    size_t pos = 0;
    while (pos < out.size()) {
        size_t end = out.find('\n', pos);
        if (end == std::string::npos) end = out.size();
        std::string_view l(out.data() + pos, end - pos);
        pos = end + 1;
        while (!l.empty() && l.front() == ' ') l.remove_prefix(1);
        if (!f(l)) return;
    }
}

// fsck.vfat -n counts the dirty bit, which every FAT mounted at the cut
// has (an unclean unmount, not damage), as an error: the verdict is then
// "dirty" when it reports nothing else.
bool only_dirty_bit(const std::string& out) {
    bool dirty = false, other = false;
    each_line(out, [&](std::string_view l) {
        if (l.starts_with("Dirty bit is set")) dirty = true;
        else if (!(l.empty() || l.starts_with("fsck.fat ") || l.starts_with("Automatically removing dirty bit") ||
                   l.starts_with("Leaving filesystem unchanged") || (l.find(" files, ") != std::string_view::npos && l.ends_with(" clusters"))))
            other = true;
        return !other;
    });
    return dirty && !other;
}

// What an fsck found, in one line: its output without the banner and the dirty bit.
std::string findings(const std::string& out) {
    std::string s;
    each_line(out, [&](std::string_view l) {
        if (!(l.empty() || l.starts_with("fsck.fat ") || l.starts_with("e2fsck ") || l.starts_with("Dirty bit is set") ||
              l.starts_with("Automatically removing dirty bit")))
            s += fmt::format("{}{}", s.empty() ? "" : " / ", l);
        return s.size() <= 160;
    });
    return s;
}

Fsck fsck(const std::string& fstype, const fs::path& img) {
    using std::chrono::seconds;
    std::vector<std::string> argv;
    if (fstype == "ext4") {
        // What a mount does first: the journal replayed (on the state's own copy).
        const auto j = launch::run_tool({"e2fsck", "-E", "journal_only", "-y", img.string()}, seconds(120));
        if (j.exit_code >= 8) throw RigError(fmt::format("e2fsck -E journal_only on {}: exit {}: {}", img.string(), j.exit_code, first_lines(j.output, 5)));
        argv = {"e2fsck", "-fn", img.string()};
    } else if (fstype == "ext2") {
        argv = {"e2fsck", "-fn", img.string()};
    } else if (fstype == "vfat") {
        argv = {"fsck.vfat", "-n", img.string()};
    } else if (fstype == "exfat") {
        argv = {"fsck.exfat", "-n", img.string()};
    } else {
        return {"skipped", "", "a raw disk has no filesystem to check"};
    }
    const auto r = launch::run_tool(argv, seconds(120));
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    // e2fsck: 4 errors left; fsck.vfat and fsck.exfat: 1. Anything else is the tool failing.
    const bool errors = (fstype.starts_with("ext") && r.exit_code == 4) || (!fstype.starts_with("ext") && (r.exit_code == 1 || r.exit_code == 4));
    if (r.exit_code != 0 && !errors) throw RigError(fmt::format("{}: exit {}: {}", cmd, r.exit_code, first_lines(r.output, 5)));
    std::string verdict = r.exit_code == 0 ? "clean" : "errors";
    if (fstype == "vfat" && errors && only_dirty_bit(r.output)) verdict = "dirty";
    return {verdict, cmd, first_lines(r.output, 8)};
}

// A file's bytes as the host reads them from an image, or nullopt with why.
std::optional<std::vector<uint8_t>> read_file(const std::string& fstype, const fs::path& img, const std::string& path, const fs::path& tmp,
                                              std::string& why) {
    const std::string inside = path.substr(std::string(scenario::kMountpoint).size());
    fs::remove(tmp);
    launch::ToolResult r;
    if (fstype == "vfat") r = launch::run_tool({"mcopy", "-n", "-i", img.string(), "::" + inside, tmp.string()}, std::chrono::seconds(60));
    else if (fstype.starts_with("ext")) r = launch::run_tool({"debugfs", "-R", fmt::format("dump {} {}", inside, tmp.string()), img.string()}, std::chrono::seconds(60));
    else {
        why = fmt::format("no host reader for {} files", fstype);
        return std::nullopt;
    }
    if (!fs::exists(tmp)) {
        why = fmt::format("the file cannot be read: {}", first_lines(r.output, 3));
        return std::nullopt;
    }
    auto bytes = slurp(tmp);
    fs::remove(tmp);
    return bytes;
}

// A promised file's contents: [0] before the run, then after each step that
// changes it (p.writes: its write steps and the renames onto it). The write
// steps by path are replayed on every file, so a rename's source holds what
// was written to it; a file's content before the run comes from initial().
std::vector<std::vector<uint8_t>> versions_of(const scenario::Scenario& sc, const scenario::CrashPromise& p, std::vector<uint8_t> old,
                                              const std::function<std::vector<uint8_t>(const std::string&)>& initial) {
    std::map<std::string, std::vector<uint8_t>> files{{p.path, old}};
    auto file = [&](const std::string& path) -> std::vector<uint8_t>& {
        auto it = files.find(path);
        return it != files.end() ? it->second : files.emplace(path, initial(path)).first->second;
    };
    std::vector<std::vector<uint8_t>> v{old};
    for (size_t i = 0; i < sc.steps.size(); ++i) {
        const auto& a = sc.steps[i].args;
        const std::string path = a.value("path", "");
        if (sc.steps[i].op == "write" && !path.empty()) {
            auto& f = file(path);
            const uint64_t len = a.value("length", uint64_t{0});
            const uint64_t off = a.value("append", false) ? f.size() : a.value("offset", uint64_t{0});
            if (f.size() < off + len) f.resize(off + len, 0);
            pattern::Stream(a.value("pattern", std::string("random")) == "zero" ? pattern::Kind::zero : pattern::Kind::random, a.value("seed", uint64_t{0}))
                .fill(f.data() + off, len);
        } else if (sc.steps[i].op == "rename" && !path.empty()) {
            auto moved = std::move(file(path));
            files.erase(path);
            files[a.value("to", "")] = std::move(moved);
        } else {
            continue;
        }
        if (std::find(p.writes.begin(), p.writes.end(), i) != p.writes.end()) v.push_back(files[p.path]);
    }
    return v;
}

struct Promise {
    const scenario::CrashPromise* spec;
    std::vector<std::vector<uint8_t>> versions;
    size_t durable_version = 0;  // the version its durable step leaves
    size_t due_from_epoch = 0;   // states of this epoch on keep that step's flush
    bool absent_before = false;  // the run creates it
};

// Where the bytes break the promise, or empty if they keep it.
std::string judge(const Promise& p, const std::vector<uint8_t>& got, bool due, uint64_t unit = kBlock) {
    const auto& want = p.versions[p.durable_version];
    if (due && got == want) return {};
    const uint64_t size = std::max<uint64_t>(got.size(), p.versions.back().size());
    for (uint64_t b = 0; b < size; b += unit) {
        auto block = [&](const std::vector<uint8_t>& v) {
            return b >= v.size() ? std::vector<uint8_t>() : std::vector<uint8_t>(v.begin() + static_cast<long>(b), v.begin() + static_cast<long>(std::min<uint64_t>(v.size(), b + unit)));
        };
        const auto g = block(got);
        bool any = false;
        for (size_t k = due ? p.durable_version : 0; k < p.versions.size() && !any; ++k) any = block(p.versions[k]) == g;
        if (!any && g.empty())  // the file ends where every allowed content goes on
            return fmt::format("{}it is {} bytes long, the content {} runs to {}", due ? fmt::format("durable since step {}, but ", p.spec->durable_after_step) : "",
                               got.size(), due ? "promised" : "written", (due ? want : p.versions.back()).size());
        if (!any)
            return due ? fmt::format("durable since step {}, but bytes {}..{} hold neither what that step left nor what a later one wrote",
                                     p.spec->durable_after_step, b, b + g.size())
                       : fmt::format("bytes {}..{} hold neither the old content nor any the steps wrote", b, b + g.size());
    }
    if (due) return fmt::format("durable since step {}, but it holds older content", p.spec->durable_after_step);
    return {};
}

// The guest's verdict on the state whose disk is dir/disk.img: its kernel
// must mount it, and each promised file it reads must hold what judge()
// allows. The bytes are judged as the host reads them from the disk the
// guest left (its journal replayed), and must be what the guest read.
// Adds "guest" to j and to each promise's entry in pj.
bool guest_check(const scenario::Scenario& sc, const std::vector<Promise>& promises, size_t epoch, uint64_t unit, const BootSpec& bs, const fs::path& dir,
                 const std::vector<std::string>& promised, const fs::path& record, const fs::path& state_dir, json& pj, json& j) {
    if (!fs::exists(dir / "extents.json")) folder::copy_new(record / "extents.json", dir / "extents.json");
    const BootResult b = boot_state(bs, dir, promised);
    if (b.exit == 2 || b.exit == 130) throw RigError(b.failure);  // bad input or Ctrl-C: no state's fault
    json g = {{"booted", b.failure.empty()}, {"exit", b.exit}, {"command", boot_command(bs, state_dir)}};
    bool ok = true;
    if (!b.failure.empty()) {
        g["mount"] = "-";
        g["why"] = b.failure;
        ok = false;
    } else {
        g["mount"] = b.mount_ret == 0 ? "ok" : b.mount_error;
        if (b.mount_ret != 0) {
            g["why"] = fmt::format("the guest kernel could not mount it: {}", b.mount_error);
            ok = false;
        }
    }
    for (size_t k = 0; k < promises.size(); ++k) {
        const auto& p = promises[k];
        const bool due = epoch >= p.due_from_epoch;
        std::string broken;
        const GuestRead* r = b.read_of(p.spec->path);
        if (!b.failure.empty() || b.mount_ret != 0) {
            broken = "not read (no mount)";
        } else if (!r) {
            broken = "the guest did not read it";
        } else if (r->ret != 0) {
            if (!(r->error == "ENOENT" && !due && p.absent_before)) broken = fmt::format("the guest's read failed: {}", r->error);
        } else {
            std::string why;
            const auto got = read_file(sc.disk.fs, b.disk_after, p.spec->path, dir / "promise", why);
            if (!got) broken = fmt::format("the guest read it, the host cannot: {}", why);
            else if (folder::xxh128_hex(*got) != r->xxh128) broken = "the guest read other bytes than the disk holds after its umount";
            else broken = judge(p, *got, due, unit);
        }
        pj[k]["guest"] = broken.empty() ? "held" : broken;
        if (!broken.empty()) {
            ok = false;
            pj[k]["held"] = false;
            const std::string host = pj[k]["why"].get<std::string>();
            pj[k]["why"] = host.empty() ? "in the guest: " + broken : host + "; in the guest: " + broken;
        }
    }
    j["guest"] = g;
    return ok;
}

struct Checked {
    json j;
    bool ok = true;
};

}  // namespace

CrashResult check_states(const scenario::Scenario& sc, const CrashOptions& o) {
    CrashResult res;
    try {
        const fs::path log_path = o.record / "write-log.bin", before = o.record / "disk-before.img";
        for (const auto& p : {log_path, before})
            if (!fs::is_regular_file(p))
                return {2, fmt::format("{}: no {} (record with blkrig run --record-writes, or give blkrig crash the scenario)\n", o.record.string(),
                                       p.filename().string())};
        const std::vector<uint8_t> log = slurp(log_path);
        WriteLogFile wl;
        try {
            wl = parse_log_writes(log);
        } catch (const LogError& e) {
            return {2, fmt::format("{}: {}\n", log_path.string(), e.what())};
        }
        if (!wl.cut_short.empty())
            return {2, fmt::format("{}: the write log is cut short ({}): its states would not be the run's\n", log_path.string(), wl.cut_short)};
        const auto epochs = epochs_of(wl);
        size_t writes = 0;
        for (const auto& e : epochs) writes += e.writes.size();
        if (writes == 0) return {2, fmt::format("{}: the run wrote nothing: there is no crash state to check\n", sc.file)};
        Selection sel = o.sel;
        sel.torn = sel.torn || sc.crash_torn;
        const Enumeration en = enumerate(epochs, sel);
        std::vector<size_t> todo;
        if (o.only) {
            if (*o.only >= en.states.size())
                return {2, fmt::format("--only {}: this enumeration has states 0..{}\n", *o.only, en.states.size() - 1)};
            todo = {*o.only};
        } else {
            for (size_t i = 0; i < en.states.size(); ++i) todo.push_back(i);
        }

        // The promises: old content from the disk before the run, due from the epoch after their step's last flush.
        // The epoch a step marker was logged in: every epoch before it had ended in a flush.
        auto epoch_of_marker = [&](int64_t m) -> std::optional<size_t> {
            for (size_t e = 0; e < epochs.size(); ++e)
                if (std::find(epochs[e].markers.begin(), epochs[e].markers.end(), m) != epochs[e].markers.end()) return e;
            return std::nullopt;
        };
        fs::create_directories(o.out / "work");
        // Until the end says otherwise, the folder says it is not finished:
        // a run killed midway never looks like a complete one.
        std::error_code gone;
        fs::remove(o.out / "crash.txt", gone);
        folder::write_atomic(o.out / "crash.json", json{{"scenario", sc.file}, {"complete", false}, {"status", "running"}}.dump(2) + "\n");
        std::vector<Promise> promises;
        for (const auto& p : sc.promises) {
            std::string why;
            // A file the run creates has no old content: before it is due, it may be absent.
            auto old = read_file(sc.disk.fs, before, p.path, o.out / "work" / "promise", why);
            if (!old && why.starts_with("no host reader")) return {2, fmt::format("{}:{}: promise on {}: {}\n", sc.file, p.line, p.path, why)};
            // A rename's source that was on the disk before the run starts from its old bytes; a new one from none.
            auto initial = [&](const std::string& path) {
                std::string none;
                return read_file(sc.disk.fs, before, path, o.out / "work" / "promise", none).value_or(std::vector<uint8_t>());
            };
            Promise pr{&p, versions_of(sc, p, old.value_or(std::vector<uint8_t>()), initial), 0, 0, !old};
            for (size_t k = 0; k < p.writes.size(); ++k)
                if (static_cast<int>(p.writes[k]) <= p.durable_after_step) pr.durable_version = k + 1;
            const auto m = epoch_of_marker(static_cast<int64_t>(markers::after_step(static_cast<uint64_t>(p.durable_after_step))));
            if (!m)
                return {3, fmt::format("{}: the write log has no marker after step {}: the run did not get that far\n", log_path.string(), p.durable_after_step)};
            pr.due_from_epoch = *m;
            promises.push_back(std::move(pr));
        }

        // The guest boots: which states, and the check scenario they run (kept in OUT for the reproduce lines).
        const std::string boot = !o.boot.empty() ? o.boot : !sc.crash_boot.empty() ? sc.crash_boot : "none";
        BootSpec bs{o.blkrig, o.out / "check.toml", o.kernel, std::chrono::seconds(std::min(sc.timeout_s, 300u) + 120)};
        std::vector<std::string> promised;
        for (const auto& p : sc.promises) promised.push_back(p.path);
        if (boot != "none") folder::write_atomic(bs.check_toml, check_scenario_text(sc));
        auto boots = [&](const State& s) { return boot == "all" || (boot == "flushes" && s.why == "flush"); };

        std::vector<Checked> out(en.states.size());
        std::atomic<size_t> next{0};
        std::mutex mu;
        std::string rig_error;
        auto worker = [&](unsigned w) {
            for (;;) {
                const size_t t = next++;
                if (t >= todo.size() || launch::interrupted_by()) return;
                {
                    std::lock_guard lock(mu);
                    if (!rig_error.empty()) return;
                }
                const size_t id = todo[t];
                const State& s = en.states[id];
                const fs::path dir = o.only ? o.out : o.out / "work" / fmt::format("w{}", w);
                try {
                    fs::create_directories(dir);
                    const fs::path img = dir / "disk.img";
                    fs::remove(img);
                    build_image(before, img, log, wl, epochs, s);
                    json j = {{"state", id}, {"epoch", s.epoch}, {"kind", s.why}, {"writes_in_epoch", epochs[s.epoch].writes.size()},
                              {"kept", s.kept.size()}, {"after_step_marker", epochs[s.epoch].last_marker}};
                    json seqs = json::array();
                    for (size_t k : s.kept) seqs.push_back(epochs[s.epoch].writes[k]);
                    j["kept_entries"] = seqs;
                    if (s.torn_write >= 0) {
                        const size_t w = static_cast<size_t>(s.torn_write);
                        j["torn"] = {{"entry", epochs[s.epoch].writes[w]}, {"sectors_written", s.torn_sectors}, {"sectors", epochs[s.epoch].sectors[w]}};
                    }
                    const Fsck f = fsck(sc.disk.fs, img);
                    bool ok = f.verdict != "errors";
                    // Named as --only leaves the state's disk, where the command reproduces the verdict.
                    const fs::path state_dir = o.only ? o.out : o.out / fmt::format("state-{}", id);
                    const std::string kept_img = (state_dir / "disk.img").string();
                    auto named = [&](std::string s) {
                        for (size_t at = 0; (at = s.find(img.string(), at)) != std::string::npos; at += kept_img.size())
                            s.replace(at, img.string().size(), kept_img);
                        return s;
                    };
                    j["fsck"] = {{"verdict", f.verdict}, {"command", named(f.command)}, {"output", named(f.output)}};
                    json pj = json::array();
                    for (const auto& p : promises) {
                        const bool due = s.epoch >= p.due_from_epoch;
                        std::string why;
                        const auto got = read_file(sc.disk.fs, img, p.spec->path, dir / "promise", why);
                        const std::string broken = got ? judge(p, *got, due, s.torn_write >= 0 ? kSectorBlock : kBlock) : (!due && p.absent_before) ? "" : why;
                        ok &= broken.empty();
                        pj.push_back({{"path", p.spec->path}, {"due", due}, {"held", broken.empty()}, {"why", broken}});
                    }
                    if (boots(s)) ok &= guest_check(sc, promises, s.epoch, s.torn_write >= 0 ? kSectorBlock : kBlock, bs, dir, promised, o.record, state_dir, pj, j);
                    j["promises"] = pj;
                    j["consistent"] = ok;
                    if (!ok)
                        j["reproduce"] = fmt::format("{} --only {} --out {}", o.rerun, id, state_dir.string());
                    if (o.only) {
                        // A guest boot has put it there already.
                        if (!fs::exists(dir / "extents.json")) folder::copy_new(o.record / "extents.json", dir / "extents.json");
                        j["disk"] = img.string();
                    } else {
                        fs::remove(img);
                    }
                    out[id] = {std::move(j), ok};
                } catch (const std::exception& e) {
                    std::lock_guard lock(mu);
                    if (rig_error.empty()) rig_error = fmt::format("state {}: {}", id, e.what());
                }
            }
        };
        std::vector<std::thread> pool;
        const unsigned jobs = std::max(1u, std::min<unsigned>(o.jobs, static_cast<unsigned>(todo.size())));
        for (unsigned w = 0; w < jobs; ++w) pool.emplace_back(worker, w);
        for (auto& t : pool) t.join();
        fs::remove_all(o.out / "work");

        size_t checked = 0, bad = 0;
        json states = json::array();
        std::string table = fmt::format("{:>6} {:>5} {:>9} {:>7}  {:<6}  {:<7}  {}\n", "state", "epoch", "kept", "kind", "fsck", "mount", "promises");
        std::vector<std::string> failing;
        for (size_t id : todo) {
            if (out[id].j.is_null()) continue;
            ++checked;
            const auto& j = out[id].j;
            std::string ps;
            for (const auto& p : j["promises"])
                ps += fmt::format("{}{} {}", ps.empty() ? "" : ", ", p["path"].get<std::string>(),
                                  p["held"].get<bool>() ? (p["due"].get<bool>() ? "durable" : "old-or-new") : "BROKEN");
            // mount: the guest kernel's, for the states a guest booted on.
            const std::string mount = j.contains("guest") ? j["guest"]["mount"].get<std::string>() : "-";
            table += fmt::format("{:>6} {:>5} {:>9} {:>7}  {:<6}  {:<7}  {}\n", id, j["epoch"].get<size_t>(),
                                 fmt::format("{}{}/{}", j["kept"].get<size_t>(), j.contains("torn") ? "+t" : "", j["writes_in_epoch"].get<size_t>()),
                                 j["kind"].get<std::string>(),
                                 j["fsck"]["verdict"].get<std::string>(), mount, ps.empty() ? "-" : ps);
            if (!out[id].ok) {
                ++bad;
                std::string why = j["fsck"]["verdict"] == "errors" ? fmt::format("{}: {}", j["fsck"]["command"].get<std::string>(), findings(j["fsck"]["output"].get<std::string>())) : "";
                if (j.contains("guest") && j["guest"].contains("why"))
                    why += fmt::format("{}guest: {}", why.empty() ? "" : "; ", j["guest"]["why"].get<std::string>());
                for (const auto& p : j["promises"])
                    if (!p["held"].get<bool>()) why += fmt::format("{}promise {}: {}", why.empty() ? "" : "; ", p["path"].get<std::string>(), p["why"].get<std::string>());
                const std::string torn = j.contains("torn") ? fmt::format(", the next torn after {} of its {} sectors", j["torn"]["sectors_written"].get<uint64_t>(),
                                                                          j["torn"]["sectors"].get<uint64_t>())
                                                            : "";
                std::string line = fmt::format("state {} (epoch {}, {} of {} writes kept{}): {}\n    reproduce: {}", id, j["epoch"].get<size_t>(),
                                               j["kept"].get<size_t>(), j["writes_in_epoch"].get<size_t>(), torn, why, j["reproduce"].get<std::string>());
                if (j.contains("guest")) line += fmt::format("\n    then boot on it: {}", j["guest"]["command"].get<std::string>());
                failing.push_back(std::move(line));
                states.push_back(j);
                states.back()["why"] = why;  // the line above's reason, for the page and for machines
                continue;
            }
            states.push_back(j);
        }
        const bool interrupted = launch::interrupted_by() != 0;
        const std::string total = en.total < 1e15L ? fmt::format("{}", static_cast<uint64_t>(en.total)) : fmt::format("{:.3g}", static_cast<double>(en.total));
        json report = {{"scenario", sc.file}, {"record", o.record.string()}, {"filesystem", sc.disk.fs}, {"epochs", epochs.size()},
                       {"writes", writes}, {"boot", boot}, {"states_possible", total}, {"states_selected", en.states.size()}, {"states_checked", checked},
                       {"inconsistent", bad}, {"complete", !interrupted && rig_error.empty() && checked == todo.size()}, {"states", states}};
        std::string summary = table;
        summary += fmt::format("{} writes in {} epochs; {} crash states possible, {} selected, {} checked: {} consistent, {} not\n", writes, epochs.size(), total,
                               en.states.size(), checked, checked - bad, bad);
        for (const auto& f : failing) summary += "  " + f + "\n";
        if (!rig_error.empty()) summary += "  the rig failed: " + rig_error + "\n";
        if (interrupted) summary += "  interrupted: crash.json says complete = false\n";
        folder::write_atomic(o.out / "crash.json", report.dump(2));
        if (const auto why = report::write_crash_report(o.out); !why.empty()) summary += "  note: no crash.html: " + why + "\n";
        else summary += fmt::format("  the page: {}\n", (o.out / "crash.html").string());
        folder::write_atomic(o.out / "crash.txt", summary);
        res.summary = summary;
        res.exit = interrupted ? 130 : !rig_error.empty() ? 3 : bad ? 1 : 0;
    } catch (const std::exception& e) {
        res.exit = 3;
        res.summary = fmt::format("blkrig crash: {}\n", e.what());
    }
    std::error_code ec;
    fs::remove_all(o.out / "work", ec);  // the states' scratch disks, on every path
    return res;
}

}  // namespace blkrig::crash
