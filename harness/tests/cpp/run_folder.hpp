// A synthetic run folder for the model and checks tests: what `blkrig run`
// would write, built request by request. The device trace is written with
// the device's own trace::Writer; guest events are the JSON objects
// parse_ftrace produces. Each step is bracketed by marker reads on both
// sides, as the agent does.
#pragma once

#include "common/temp_dir.hpp"
#include "trace/writer.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace blkrig::test {

inline constexpr uint64_t kMarkerFirst = 131072;  // marker region: after a 64 MiB image
inline constexpr const char* kDev = "254,0";

struct GuestOpts {
    bool traced = true;                 // the guest trace shows it
    std::string rwbs;                   // default from the op
    std::vector<std::pair<uint64_t, uint64_t>> bios;  // default: one bio covering the request
    bool device = true;                 // the device sees it
    int cpu = 0;                        // the guest CPU its events are traced on
    uint16_t queue = 0;                 // the virtqueue the device sees it on
};

// The guest trace does not show it (it happened before tracing, or was lost).
inline GuestOpts untraced() {
    GuestOpts g;
    g.traced = false;
    return g;
}
// The guest issued it; the device never saw it.
inline GuestOpts unseen() {
    GuestOpts g;
    g.device = false;
    return g;
}
// The bios the guest merged into it.
inline GuestOpts merged(std::vector<std::pair<uint64_t, uint64_t>> bios, std::string rwbs = "") {
    GuestOpts g;
    g.bios = std::move(bios);
    g.rwbs = std::move(rwbs);
    return g;
}

class RunFolder {
public:
    RunFolder() {
        run_json_ = {{"version", 1},
                     {"disk", "/dev/vda"},
                     {"mountpoint", "/mnt"},
                     {"fstype", "vfat"},
                     {"marker", {{"first_sector", kMarkerFirst}, {"count", 64}, {"block_size", 512}}},
                     {"steps", nlohmann::json::array()}};
        extents_ = {{"files", nlohmann::json::array()}};
    }

    std::string path() const { return dir_.file(""); }
    std::string file(const std::string& name) const { return dir_.file(name); }

    // A file of the image: extents as (file_offset, sector, sectors).
    void add_file(const std::string& p, uint64_t size, const std::vector<std::tuple<uint64_t, uint64_t, uint64_t>>& extents) {
        nlohmann::json ex = nlohmann::json::array();
        for (const auto& [o, s, n] : extents) ex.push_back({{"file_offset", o}, {"sector", s}, {"sectors", n}});
        extents_["files"].push_back({{"path", p}, {"size_bytes", size}, {"extents", ex}, {"sha256", ""}, {"metadata", nlohmann::json::array()}});
    }

    // Opens agent step i: the marker read 2i on both sides.
    void begin_step(const std::string& op, const std::string& step_path = "") {
        nlohmann::json s = {{"op", op}};
        if (!step_path.empty()) s["path"] = step_path;
        run_json_["steps"].push_back(s);
        marker(2 * current());
    }
    // Closes it: marker 2i+1 and the agent's result line.
    void end_step(int64_t ret = 0, uint64_t bytes = 0) {
        const size_t i = current();
        marker(2 * i + 1);
        nlohmann::json r = {{"type", "step"}, {"index", i}, {"op", run_json_["steps"][i]["op"]}, {"ret", ret}, {"errno", ret ? 5 : 0},
                            {"error", ret ? "EIO" : ""}, {"call", ret ? "pread" : ""}, {"marker_begin", 2 * i}, {"marker_end", 2 * i + 1}};
        if (bytes) r["bytes"] = bytes;
        results_.push_back(r);
    }

    // One request: the guest's bios, its issue and completion, and the
    // device's record. Returns the device seq (or the seq it would have had).
    uint64_t request(uint32_t type, uint64_t sector, uint64_t sectors, GuestOpts g = {}, uint16_t nsegs = 1, uint8_t status = trace::kStatusOk) {
        const std::string rwbs = !g.rwbs.empty() ? g.rwbs : type == 0 ? "R" : type == 1 ? "W" : type == 4 ? "FF" : "N";
        cpu_ = g.cpu;
        if (g.traced) {
            if (g.bios.empty() && type != 4) g.bios.push_back({sector, sectors});
            bool first = true;
            for (const auto& [s, n] : g.bios) {
                guest({{"event", "block_bio_queue"}, {"dev", kDev}, {"rwbs", rwbs}, {"sector", s}, {"nsect", n}, {"comm", "dd"}});
                if (first) guest({{"event", "block_getrq"}, {"dev", kDev}, {"rwbs", rwbs}, {"sector", s}, {"nsect", n}});
                else guest({{"event", "block_bio_backmerge"}, {"dev", kDev}, {"rwbs", rwbs}, {"sector", s}, {"nsect", n}});
                first = false;
            }
            guest({{"event", "block_rq_issue"}, {"dev", kDev}, {"rwbs", rwbs}, {"bytes", sectors * 512}, {"sector", type == 4 ? 0 : sector},
                   {"nsect", type == 4 ? 0 : sectors}});
        }
        const uint64_t seq = seq_;
        if (g.device) {
            trace::RequestRecord r;
            r.seq = seq_++;
            r.sector = type == 4 ? 0 : sector;
            r.bytes = type == 4 ? 0 : sectors * 512;
            r.type = type;
            r.queue = g.queue;
            r.nsegs = nsegs;
            for (uint16_t k = 0; k < nsegs; ++k) r.seg_lens.push_back(static_cast<uint32_t>(r.bytes / nsegs));
            r.status = status;
            r.t_submit_ns = t_ns_ += 1000;
            r.t_complete_ns = t_ns_ += 1000;
            requests_.push_back(r);
        }
        if (g.traced)
            guest({{"event", "block_rq_complete"}, {"dev", kDev}, {"rwbs", rwbs}, {"sector", type == 4 ? 0 : sector},
                   {"nsect", type == 4 ? 0 : sectors}, {"error", status == trace::kStatusOk ? 0 : -5}});
        cpu_ = 0;
        return seq;
    }
    uint64_t read(uint64_t sector, uint64_t sectors, GuestOpts g = {}) { return request(0, sector, sectors, std::move(g)); }
    uint64_t write(uint64_t sector, uint64_t sectors, GuestOpts g = {}) { return request(1, sector, sectors, std::move(g)); }
    uint64_t flush(GuestOpts g = {}) { return request(4, 0, 0, std::move(g)); }

    void fault(uint64_t seq, uint32_t rule, uint16_t action) { faults_.push_back({seq, rule, action, 0}); }
    // A seq the device gave out and never completed (a request lost at a crash).
    void skip_seq() { ++seq_; }
    void function(const std::string& name) { guest({{"event", "function"}, {"function", name}, {"parent", "caller"}}); }
    void guest(nlohmann::json e) {
        e["ts"] = ts_ += 0.000001;
        e["cpu"] = cpu_;
        guest_.push_back(e.dump());
    }
    void guest_line(const std::string& raw) { guest_.push_back(raw); }
    void marker(size_t index) {
        const uint64_t s = kMarkerFirst + index;
        guest({{"event", "block_bio_queue"}, {"dev", kDev}, {"rwbs", "RS"}, {"sector", s}, {"nsect", 1}});
        guest({{"event", "block_rq_issue"}, {"dev", kDev}, {"rwbs", "RS"}, {"bytes", 512}, {"sector", s}, {"nsect", 1}});
        markers_.push_back({seq_++, t_ns_ += 1000, static_cast<uint32_t>(index), 0, 0});
        guest({{"event", "block_rq_complete"}, {"dev", kDev}, {"rwbs", "RS"}, {"sector", s}, {"nsect", 1}, {"error", 0}});
    }
    void scenario(const std::string& toml) { scenario_ = toml; }
    // The agent's hello record (type added), e.g. its sysfs readings.
    void hello(nlohmann::json h) { hello_ = std::move(h); }
    void events_txt(const std::string& text) { events_txt_ = text; }
    nlohmann::json& run_json() { return run_json_; }

    // Writes every file.
    void write() {
        put("run.json", run_json_.dump(2));
        nlohmann::json hello = hello_;
        hello["type"] = "hello";
        std::string res = hello.dump() + "\n";
        for (const auto& r : results_) res += r.dump() + "\n";
        res += nlohmann::json{{"type", "done"}, {"steps", results_.size()}}.dump() + "\n";
        put("results.jsonl", res);
        put("extents.json", extents_.dump(2));
        std::string ge;
        for (const auto& l : guest_) ge += l + "\n";
        put("guest-events.jsonl", ge);
        if (scenario_) put("scenario.toml", *scenario_);
        if (events_txt_) put("events.txt", *events_txt_);
        trace::FileHeader h{};
        h.capacity_sectors = kMarkerFirst + 1024;
        h.logical_block_size = 512;
        h.num_queues = 1;
        for (const auto& r : requests_) h.num_queues = std::max<uint16_t>(h.num_queues, static_cast<uint16_t>(r.queue + 1));
        {
            trace::Writer w(dir_.file("trace.bin"), h, "{}");
            // The device writes records at completion; markers and requests interleave by seq.
            size_t ri = 0, mi = 0;
            while (ri < requests_.size() || mi < markers_.size()) {
                if (mi < markers_.size() && (ri == requests_.size() || markers_[mi].seq < requests_[ri].seq)) {
                    w.marker(markers_[mi++]);
                    continue;
                }
                const auto& r = requests_[ri++];
                w.record(r);
                for (const auto& f : faults_)
                    if (f.seq == r.seq) w.fault(f);
            }
            w.close();
        }
    }
    // Cuts the last n bytes off a file (a trace the device did not close, or cut mid-record).
    void chop(const std::string& name, uint64_t n) const {
        const auto p = dir_.file(name);
        std::filesystem::resize_file(p, std::filesystem::file_size(p) - n);
    }
    void put(const std::string& name, const std::string& text) const {
        std::ofstream out(dir_.file(name), std::ios::binary | std::ios::trunc);
        out << text;
    }

private:
    size_t current() const { return run_json_["steps"].size() - 1; }

    TempDir dir_;
    nlohmann::json run_json_, extents_, hello_ = nlohmann::json::object();
    std::vector<nlohmann::json> results_;
    std::vector<trace::RequestRecord> requests_;
    std::vector<trace::MarkerRecord> markers_;
    std::vector<trace::FaultRecord> faults_;
    std::vector<std::string> guest_;
    std::optional<std::string> scenario_, events_txt_;
    uint64_t seq_ = 0;
    uint64_t t_ns_ = 1000000;
    double ts_ = 1.0;
    int cpu_ = 0;
};

}  // namespace blkrig::test
