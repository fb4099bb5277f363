// guestless-run-folder OUT: a run folder around a real device trace, no guest.
// Our front end drives blkrig-device (fault rules on) through four steps, each
// bracketed by marker reads as the agent does; then the guest's side is
// written as the agent would have reported it (results.jsonl, and block
// events for every request the device saw), and verdict.json is made by the
// same checks blkrig run uses. For tests of what reads run folders (the report).
#include "checks/expect.hpp"
#include "checks/steps.hpp"
#include "frontend/frontend.hpp"
#include "launch/process.hpp"
#include "model/run_model.hpp"
#include "scenario/scenario.hpp"
#include "trace/reader.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <thread>

using namespace blkrig;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kImageSectors = 65536;  // 32 MiB; the marker region follows
constexpr uint32_t kMarkerSectors = 64;
constexpr uint64_t kFileFirst = 2048, kFileSectors = 6144;  // /f.bin: 3 MiB, one extent
constexpr uint64_t kFaultSector = 8192;                     // just past the file: reads there fail
constexpr const char* kDev = "254,0";

fs::path build_dir() {
    const char* b = std::getenv("BLKRIG_BUILD_DIR");
    return b && *b ? fs::path(b) : fs::canonical("/proc/self/exe").parent_path().parent_path().parent_path();
}

const char* kScenario = R"(# Written by guestless-run-folder: the steps its front end played.
[scenario]
name = "guestless"
description = "a real device trace from the front end, no guest"

[disk]
fs = "vfat"
size = "32M"

[[disk.files]]
path = "/f.bin"
size = "3M"

[[steps]]
op = "write"
path = "/mnt/f.bin"
bs = "64K"

[[steps]]
op = "read"
path = "/mnt/f.bin"
bs = "32K"

[[steps]]
op = "read"
path = "/mnt/f.bin"
bs = "4K"

[[steps]]
op = "sync"

[[expect]]
name = "writes of at most 32 KiB"
step = 0
max_request_bytes = 32768

[[expect]]
name = "the read ascends"
step = 1
file = "/mnt/f.bin"
ascending = true
)";

struct Driver {
    frontend::Frontend& fe;
    frontend::Frontend::Buf buf;
    std::vector<json> results;
    int step = -1;

    void marker(uint32_t index) {
        auto b = fe.alloc(512);
        if (fe.read(kImageSectors + index, b) != VIRTIO_BLK_S_OK) throw std::runtime_error(fmt::format("marker {} read failed", index));
    }
    void begin() { marker(2 * static_cast<uint32_t>(++step)); }
    void end(const std::string& op, int64_t ret, uint64_t bytes) {
        marker(2 * static_cast<uint32_t>(step) + 1);
        json r = {{"type", "step"}, {"index", step}, {"op", op}, {"ret", ret}, {"errno", ret ? 5 : 0}, {"error", ret ? "EIO" : ""},
                  {"call", ret ? "pread" : ""}, {"marker_begin", 2 * step}, {"marker_end", 2 * step + 1}};
        if (bytes) r["bytes"] = bytes;
        results.push_back(r);
    }
    frontend::Frontend::Buf slice(uint32_t len) { return {buf.gpa, buf.host, len}; }
};

// The guest's block events for the device's requests, in seq order: a bio
// per 16 KiB (merged into one request), issue and completion.
std::string guest_events(const trace::Trace& t) {
    std::map<uint64_t, std::string> by_seq;
    auto line = [](double ts, const char* event, const std::string& rwbs, uint64_t sector, uint64_t nsect, const std::string& extra = "") {
        return fmt::format(R"({{"cpu":0,"dev":"{}",{}"event":"{}","nsect":{},"rwbs":"{}","sector":{},"comm":"fio","ts":{:.9f}}})"
                           "\n",
                           kDev, extra, event, nsect, rwbs, sector, ts);
    };
    for (const auto& m : t.markers) {
        const double ts = static_cast<double>(m.t_ns) / 1e9;
        const uint64_t s = kImageSectors + m.index;
        by_seq[m.seq] = line(ts - 2e-6, "block_bio_queue", "RS", s, 1) + line(ts - 1e-6, "block_rq_issue", "RS", s, 1, R"("bytes":512,)") +
                        line(ts + 1e-6, "block_rq_complete", "RS", s, 1, R"("error":0,)");
    }
    for (const auto& r : t.requests) {
        const double ts = static_cast<double>(r.t_submit_ns) / 1e9, te = static_cast<double>(r.t_complete_ns) / 1e9 + 1e-6;
        const std::string rwbs = r.type == VIRTIO_BLK_T_IN ? "R" : r.type == VIRTIO_BLK_T_OUT ? "W" : r.type == VIRTIO_BLK_T_FLUSH ? "FF" : "D";
        const uint64_t n = r.type == VIRTIO_BLK_T_FLUSH ? 0 : (r.bytes + 511) / 512;
        const uint64_t sector = r.type == VIRTIO_BLK_T_FLUSH ? 0 : r.sector;
        std::string s;
        double at = ts - 1e-5;
        if (n == 0) s += line(at, "block_bio_queue", rwbs, 0, 0);
        for (uint64_t off = 0; off < n; off += 32) {
            s += line(at += 1e-7, "block_bio_queue", rwbs, sector + off, std::min<uint64_t>(32, n - off));
            s += line(at += 1e-7, off == 0 ? "block_getrq" : "block_bio_backmerge", rwbs, sector + off, std::min<uint64_t>(32, n - off));
        }
        s += line(ts - 1e-6, "block_rq_issue", rwbs, sector, n, fmt::format(R"("bytes":{},)", n * 512));
        s += line(te, "block_rq_complete", rwbs, sector, n, fmt::format(R"("error":{},)", r.status == 0 ? 0 : -5));
        by_seq[r.seq] = s;
    }
    std::string out;
    for (const auto& [seq, s] : by_seq) out += s;
    return out;
}

void put(const fs::path& p, const std::string& text) {
    std::ofstream o(p, std::ios::binary | std::ios::trunc);
    o << text;
    if (!o) throw std::runtime_error("cannot write " + p.string());
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: guestless-run-folder OUT_DIR\n";
        return 2;
    }
    try {
        const fs::path out = fs::absolute(argv[1]);
        fs::create_directories(out);
        const fs::path image = out / "disk.img", sock = out / "vu.sock";
        { std::ofstream(image).close(); }
        fs::resize_file(image, kImageSectors * 512);
        fs::remove(sock);
        const std::vector<std::string> rules = {fmt::format("ioerr op=read sector={}..{}", kFaultSector, kFaultSector + 7),
                                                "delay=3ms op=write every=8"};
        std::vector<std::string> dev = {(build_dir() / "qemu-device" / "blkrig-device").string(), "--socket-path", sock.string(),
                                        "--blk-file", image.string(), "--trace", (out / "trace.bin").string(), "--marker-sectors",
                                        std::to_string(kMarkerSectors), "--discard", "on"};
        for (const auto& r : rules) dev.insert(dev.end(), {"--fault", r});
        launch::Child child("blkrig-device", dev, (out / "device.log").string());
        for (int i = 0; i < 1000 && !fs::exists(sock); ++i) {
            if (child.poll()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (!fs::exists(sock)) throw std::runtime_error("blkrig-device did not listen:\n" + launch::tail_lines((out / "device.log").string(), 10));
        std::vector<json> results;
        {
            frontend::Options o;
            o.socket_path = sock.string();
            frontend::Frontend fe(o);
            Driver d{fe, fe.alloc(64 << 10), {}};
            std::mt19937 rng(7);
            for (uint32_t i = 0; i < d.buf.len; ++i) d.buf.host[i] = static_cast<uint8_t>(rng());
            // Step 0: the file written 64 KiB at a time, then a flush.
            d.begin();
            for (uint64_t s = kFileFirst; s < kFileFirst + kFileSectors; s += 128)
                if (fe.write(s, d.slice(64 << 10)) != VIRTIO_BLK_S_OK) throw std::runtime_error("write failed");
            fe.flush();
            d.end("write", 0, kFileSectors * 512);
            // Step 1: read back 32 KiB at a time, and on past its end into the faulted sectors.
            d.begin();
            for (uint64_t s = kFileFirst; s < kFileFirst + kFileSectors; s += 64) fe.read(s, d.slice(32 << 10));
            const bool eio = fe.read(kFaultSector, d.slice(4096)) != VIRTIO_BLK_S_OK;
            d.end("read", eio ? -1 : 0, kFileSectors * 512);
            // Step 2: 4 KiB reads at random places of the file.
            d.begin();
            std::uniform_int_distribution<uint64_t> pick(0, kFileSectors / 8 - 1);
            for (int i = 0; i < 200; ++i) fe.read(kFileFirst + 8 * pick(rng), d.slice(4096));
            d.end("read", 0, 200 * 4096);
            // Step 3: a flush and a discard of the space after the file.
            d.begin();
            fe.flush();
            struct {
                uint64_t sector;
                uint32_t num_sectors, flags;
            } seg{16384, 4096, 0};
            auto b = fe.alloc(sizeof seg);
            std::memcpy(b.host, &seg, sizeof seg);
            fe.submit(0, VIRTIO_BLK_T_DISCARD, 16384, {b});
            while (fe.wait(std::chrono::milliseconds(1000)).empty()) {
            }
            d.end("sync", 0, 0);
            results = d.results;
        }
        child.terminate(std::chrono::milliseconds(3000));
        fs::remove(sock);

        const auto t = trace::read_trace((out / "trace.bin").string());
        if (!t.complete()) throw std::runtime_error("the device trace is incomplete: " + t.incompleteness());
        put(out / "guest-events.jsonl", guest_events(t));
        put(out / "scenario.toml", kScenario);
        json steps = json::array();
        for (const auto& r : results) steps.push_back({{"op", r["op"]}, {"path", r["op"] == "sync" ? "" : "/mnt/f.bin"}});
        for (auto& s : steps)
            if (s["path"] == "") s.erase("path");
        put(out / "run.json", json{{"version", 1},
                                   {"disk", "/dev/vda"},
                                   {"mountpoint", "/mnt"},
                                   {"fstype", "vfat"},
                                   {"marker", {{"first_sector", kImageSectors}, {"count", kMarkerSectors}, {"block_size", 512}}},
                                   {"steps", steps}}
                                  .dump(2));
        std::string res = json{{"type", "hello"}}.dump() + "\n";
        for (const auto& r : results) res += r.dump() + "\n";
        res += json{{"type", "done"}, {"steps", results.size()}}.dump() + "\n";
        put(out / "results.jsonl", res);
        put(out / "extents.json",
            json{{"files",
                  {{{"path", "/f.bin"},
                    {"size_bytes", kFileSectors * 512},
                    {"sha256", ""},
                    {"extents", {{{"file_offset", 0}, {"sector", kFileFirst}, {"sectors", kFileSectors}}}},
                    {"metadata", json::array()}}}}}
                .dump(2));

        // The verdict, as blkrig run makes it.
        const auto sc = scenario::load_scenario((out / "scenario.toml").string());
        std::map<size_t, json> by_index;
        for (const auto& r : results) by_index[r["index"].get<size_t>()] = r;
        const auto verdicts = checks::check_steps(sc, by_index, {});
        const auto m = model::load_run(out);
        const auto expect = checks::check_all(m, checks::parse_expectations(sc.expects, sc.file));
        bool ok = true;
        json vs = json::array(), es = json::array(), problems = json::array();
        for (const auto& v : verdicts) {
            vs.push_back(checks::to_json(v));
            if (!v.ok) ok = false, problems.push_back(checks::describe_failure(v));
        }
        for (const auto& c : expect) {
            es.push_back(checks::to_json(c));
            if (!c.ok) ok = false, problems.push_back(fmt::format("{} {}: {}", c.where, c.property, c.message));
        }
        put(out / "verdict.json", json{{"scenario", sc.file}, {"name", sc.name}, {"kernel", "none (guestless)"}, {"outcome", ok ? "pass" : "fail"},
                                       {"exit_code", ok ? 0 : 1}, {"problems", problems}, {"steps", vs}, {"expect", es},
                                       {"findings", m.findings}}
                                      .dump(2));
        fmt::print("{}: {} requests, {} markers, {} faults, outcome {}\n", out.string(), t.requests.size(), t.markers.size(), t.faults.size(),
                   ok ? "pass" : "fail");
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "guestless-run-folder: " << e.what() << "\n";
        return 1;
    }
}
