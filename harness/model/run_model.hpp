// One run folder (what `blkrig run` wrote) as one model: the steps the agent
// ran and where each sits in the device trace and the guest trace, every
// device request (faults attached), the guest's bios and requests, and the
// image's file → sector map. load_run reads and checks the files, then
// correlate() (correlate.hpp) ties guest requests to device requests.
// Queries over the model are in queries.hpp; docs/harness.md describes it.
#pragma once

#include "model/guest_events.hpp"
#include "common/ops.hpp"
#include "common/sectors.hpp"
#include "trace/format.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace blkrig::model {

// A run folder this layer cannot use: which file, and what is wrong with it.
struct RunError : std::runtime_error {
    RunError(std::filesystem::path file, const std::string& what);
    std::filesystem::path file;
};

// The device's record of a request, as it was traced (its fault joined back
// from the fault record), and what correlation adds to it.
struct Request : trace::RequestRecord {
    Request() = default;
    explicit Request(trace::RequestRecord&& r) : trace::RequestRecord(std::move(r)) {}

    int32_t step = -1;     // index into Run::steps whose markers bracket it, -1 outside every step
    int32_t segment = 0;   // 1 + the index of the marker before it (0: before the first marker)
    int64_t issue = -1;    // index into Run::issues of the guest request it was, -1 unmatched
    int32_t file = -1;     // index into Run::files of the first file it touches, -1 none
    uint64_t file_offset = 0;  // with file: the file offset of the first byte it carries of that file

    // Saturating: a request the device refused may name any range the guest sent.
    uint64_t sectors() const { return sectors::covering(bytes); }
    uint64_t end_sector() const { return sectors() > UINT64_MAX - sector ? UINT64_MAX : sector + sectors(); }
    // read, write, discard, write_zeroes, secure_erase: requests with a sector range
    bool is_data() const {
        const auto* o = ops::find(type);
        return o && o->ranged;
    }
    std::string op() const;
};

// A guest bio piece: a block_bio_queue, cut where block_split split it.
struct Bio {
    uint64_t sector = 0;
    uint64_t sectors = 0;
    uint32_t event = 0;  // index into Run::guest.events of its block_bio_queue
    GuestOp op = GuestOp::none;
    bool merged = false;  // a block_bio_backmerge/frontmerge was seen for it
};

// A guest block_rq_issue on the test disk (marker reads excluded).
struct GuestIssue {
    uint32_t event = 0;    // index into Run::guest.events
    GuestOp op = GuestOp::none;
    uint64_t sector = 0;
    uint64_t sectors = 0;
    int32_t segment = 0;   // like Request::segment, from the guest's marker reads
    int32_t step = -1;
    uint32_t bios_begin = 0, bios_count = 0;  // into Run::bios
    int64_t request = -1;  // index into Run::requests, -1 unmatched
    bool reissue = false;  // issued again before an earlier identical one completed (a requeue)
};

struct Step {
    int index = -1;        // the scenario's step index; -1 for a step the run added (the FIEMAP after mount)
    int agent_index = 0;   // position in run.json's steps: markers 2*agent_index and 2*agent_index + 1
    std::string op;
    std::string path;      // "" when the step has none (an fd step: see args)
    nlohmann::json args;   // the step as run.json gave it to the agent
    bool ran = false;      // results.jsonl has its record
    bool ok = false;       // ran and returned 0
    int64_t ret = -1;
    int64_t errno_value = 0;
    std::string error;     // errno name or text, "" on success
    std::string call;
    uint64_t bytes = 0;
    nlohmann::json result;  // the agent's result line
    int64_t marker_begin = -1, marker_end = -1;  // marker block indices
    // Device requests strictly between the two marker records: seq in
    // [first_seq, last_seq] (first_seq = last_seq + 1 when there are none);
    // -1 when a marker record is missing.
    int64_t first_seq = -1, last_seq = -1;
    bool bracketed = false;  // both marker records are in the trace
    size_t req_begin = 0, req_end = 0;  // [begin, end) into Run::requests
    // Guest events strictly between the end of the opening marker read and
    // the start of the closing one; guest_bracketed false when either is
    // missing from the guest trace (then the range is empty).
    size_t guest_begin = 0, guest_end = 0;
    bool guest_bracketed = false;
};

struct Extent {
    uint64_t file_offset = 0;
    uint64_t sector = 0;
    uint64_t sectors = 0;
};

struct File {
    std::string path;        // inside the filesystem, "/f1.bin"
    std::string guest_path;  // as steps name it, "/mnt/f1.bin"
    uint64_t size = 0;
    std::vector<Extent> extents;  // in file order
};

// Where each sector of a file lives; the index behind Request::file.
struct ExtentIndexEntry {
    uint64_t sector = 0, sectors = 0, file_offset = 0;
    uint32_t file = 0;
    uint32_t extent = 0;  // index into File::extents
};

struct Marker {
    uint64_t seq = 0;
    uint64_t t_ns = 0;
    uint32_t index = 0;
};

struct Run {
    std::filesystem::path dir;
    nlohmann::json run_json;
    std::string mountpoint = "/mnt";
    uint64_t marker_first_sector = 0;  // 0: the run had no marker region
    uint64_t marker_count = 0;
    uint32_t marker_block_size = 512;
    std::string test_dev;  // the guest's "major,minor" of the test disk, "" if the guest trace has no block events
    // The hardware queue each guest CPU's requests go to (blk-mq's map, from
    // the agent's hello: /sys/block/vda/mq/<queue>/cpu_list), -1 for a CPU
    // no queue lists; empty when the agent did not report it.
    std::vector<int32_t> queue_of_cpu;

    trace::FileHeader trace_header{};
    std::string trace_incomplete;  // why the device trace is incomplete, "" when complete
    // Records the device could not have written (trace::BadRecord), left
    // out of requests and markers; each is a finding, and fails every check.
    std::vector<std::string> trace_bad;
    std::vector<Request> requests;  // in seq order, markers excluded
    std::vector<Marker> markers;    // in seq order

    std::vector<Step> steps;  // in the agent's order; the scenario's steps have index >= 0

    GuestEvents guest;
    std::vector<Bio> bios;
    std::vector<GuestIssue> issues;

    std::vector<File> files;
    std::vector<ExtentIndexEntry> extent_index;  // by sector

    // Mismatches and gaps the load and the correlation found, for people:
    // nothing that does not match is dropped silently. One entry per kind:
    // a line saying what and how many, then the first few, indented.
    std::vector<std::string> findings;
    // Expected gaps: device requests from before the guest trace started
    // (firmware, partition scan) or after it stopped.
    std::vector<std::string> notes;

    const Step* step(int index) const;              // by the scenario's index, nullptr if none
    const Step* agent_step(int agent_index) const;  // by run.json's position
    const File* file(std::string_view path) const;  // "/mnt/f1.bin" or "/f1.bin"
    int file_index(std::string_view path) const;
    const std::string& name(uint32_t id) const { return guest.name(id); }
    const Request* by_seq(uint64_t seq) const;
    // The guest events of the run as JSON objects, read back from
    // guest-events.jsonl ([begin, end) are indices into guest.events).
    std::vector<nlohmann::json> guest_json(size_t begin, size_t end) const;
};

// Where load_run's time goes, in seconds (model-bench prints it).
struct LoadTimings {
    double steps = 0;      // run.json, scenario.toml, results.jsonl
    double trace = 0;      // trace.bin, steps placed
    double extents = 0;    // extents.json, requests mapped to files
    double guest = 0;      // guest-events.jsonl
    double correlate = 0;  // guest requests to device requests, bios
};

struct LoadOptions {
    // A device trace cut short inside a record is an error unless this is
    // set; then it is a finding and the records before the cut are used.
    bool allow_truncated_trace = false;
    LoadTimings* timings = nullptr;  // filled in when set
};

// Reads the run folder: run.json, results.jsonl, trace.bin,
// guest-events.jsonl (events.txt for its header, if present), extents.json,
// scenario.toml (optional: without it steps are numbered as the agent ran
// them). Throws RunError naming the file for anything missing or unusable.
Run load_run(const std::filesystem::path& dir, const LoadOptions& opts = {});

// The file (if any) that the sector belongs to: the index entry, or nullptr.
const ExtentIndexEntry* extent_at(const Run& run, uint64_t sector);

const char* op_name(GuestOp op);

// blk-mq's CPU → hardware queue map from sysfs attributes keyed as the
// agent reports them ("mq/1/cpu_list": "1,3"); index: CPU, value: queue.
std::vector<int32_t> queue_of_cpu(const nlohmann::json& sysfs);

}  // namespace blkrig::model
