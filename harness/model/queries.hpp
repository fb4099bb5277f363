// Questions asked of a loaded run: which requests a step made, how they map
// onto a file, how they were sized, merged and ordered. Pure functions of
// the Run; the checks (checks/expect.hpp) and the Python bindings use them.
#pragma once

#include "model/run_model.hpp"

#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace blkrig::model {

// An unknown step, file or operation named in a query.
struct QueryError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

struct Filter {
    std::optional<int> step;        // the scenario's step index (Step::index)
    std::optional<std::string> op;  // "read", "write", "flush", ... (trace::op_label); "data": every op with a sector range
};

// The step with this scenario index; QueryError naming the valid ones otherwise.
const Step& step_or_throw(const Run& run, int index);
// The file by guest ("/mnt/f.bin") or image ("/f.bin") path; QueryError otherwise.
int file_or_throw(const Run& run, const std::string& path);
// QueryError unless op is an operation label the device trace uses (or "data").
void check_op(const std::string& op);

// Device requests in seq order: all of them, or a step's, of one op.
std::vector<const Request*> requests(const Run& run, const Filter& f);

// A request's share of one file.
struct FileHit {
    const Request* request = nullptr;
    uint64_t file_offset = 0;  // the file offset of the first byte it carries of the file
    uint64_t file_bytes = 0;   // how many bytes of the file it carries
    uint32_t extent = 0;       // the file extent (index into File::extents) of its first byte
    bool crosses_extent = false;  // it carries bytes of more than one of the file's extents
};
std::vector<FileHit> file_hits(const Run& run, int file, const std::vector<const Request*>& reqs);
std::vector<FileHit> file_requests(const Run& run, int file, const Filter& f);

// The request of the selection whose sectors hold this byte of the file
// (the first in seq order), or nullptr.
const Request* request_at(const Run& run, int file, uint64_t offset, const Filter& f);
// The device sector holding a byte of the file, nullopt in a hole or past the end.
std::optional<uint64_t> sector_of(const File& file, uint64_t offset);

// Data requests only (flushes carry no sectors). A contiguous run: each
// request starts where the previous one ended. An ascending run ends where
// a request starts before the previous one's end: a backward seek.
std::vector<std::vector<uint64_t>> contiguous_runs(const std::vector<const Request*>& reqs);
std::vector<std::vector<uint64_t>> ascending_runs(const std::vector<const Request*>& reqs);
uint64_t backward_seeks(const std::vector<const Request*>& reqs);

std::map<uint64_t, uint64_t> size_histogram(const std::vector<const Request*>& reqs);     // bytes -> count
std::map<uint64_t, uint64_t> segment_histogram(const std::vector<const Request*>& reqs);  // nsegs -> count

// Guest bios per device request, over the requests matched to a guest
// request (the others have no bios to count); 0 when none is matched.
double merge_ratio(const Run& run, const std::vector<const Request*>& reqs);
uint32_t bio_count(const Run& run, const Request& r);
std::string guest_rwbs(const Run& run, const Request& r);

std::vector<const Request*> fault_hits(const std::vector<const Request*>& reqs);

// Names of the functions the guest's function tracer saw: in the whole
// trace, or inside one step's markers.
std::set<std::string> functions_hit(const Run& run, std::optional<int> step);

// "step 2 read /mnt/f1.bin", "added step (agent 1) fiemap /mnt/f1.bin".
std::string step_label(const Step& s);

}  // namespace blkrig::model
