// The run description (/etc/blkrig/run.json, docs/agent-protocol.md) as
// types, and the parser that checks it before the agent touches anything.
#pragma once

#include "agent_core/pattern.hpp"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace blkrig::agent {

enum class Op {
    mount, umount, read, write, fsync, fdatasync, sync, drop_caches, truncate, mmap_write, fiemap, sleep, open, close, rename
};

const char* op_name(Op op);
std::optional<Op> op_from_name(std::string_view name);

enum class Access { read, write, read_write };

// One step. Which fields an op uses is in the protocol's table; the others
// keep their defaults.
struct Step {
    Op op = Op::sync;
    std::string path;  // empty when `fd` names the file
    std::string fd;    // a descriptor named by an earlier open step
    int64_t offset = 0;
    int64_t length = -1;  // read: -1 reads to EOF
    int64_t bs = 4096;
    bool direct = false;
    bool append = false;
    bool create = true;  // write: true; open: false
    pattern::Kind pattern = pattern::Kind::random;
    uint64_t seed = 0;
    int value = 3;    // drop_caches
    int64_t size = 0;  // truncate
    std::string to;    // rename: the new name (replaced if it exists, as rename(2) does)
    int64_t ms = 0;    // sleep
    Access access = Access::read;  // open
    int cpu = -1;  // any op: run the step's process on this CPU only; -1: wherever the scheduler puts it
    // read, write, mmap_write: report the bytes' SHA-256 too (a scenario's
    // literal expect.sha256), besides XXH3-128, which is always reported.
    bool sha256 = false;
};

// mount_options split the way mount(8) does: generic words become MS_* flags,
// the rest is the filesystem's data string.
struct MountOptions {
    unsigned long flags = 0;
    std::string data;
};

MountOptions split_mount_options(std::string_view options);

struct Marker {
    uint64_t first_sector = 0;
    uint64_t count = 0;
    uint32_t block_size = 512;

    // Where marker block `index` is on the raw disk.
    uint64_t byte_offset(uint64_t index) const { return first_sector * 512 + index * block_size; }
    // How that block starts: blkrig-device fills each marker sector with
    // "BLKRIG-MARKER <n>\n", n counting sectors from the region's start. A
    // block that does not start so means first_sector is not where the
    // region begins (the image's size in sectors).
    std::string expected_text(uint64_t index) const {
        return "BLKRIG-MARKER " + std::to_string(index * block_size / 512) + "\n";
    }
};

// What an earlier boot of the same kernel, with the same modules and the
// same wanted functions, selected from available_filter_functions: the
// agent sets these lines, reads the filter back, and reads the whole list
// (0.18 s under TCG) only when the kernel set other functions.
struct FilterHint {
    std::vector<uint64_t> lines;          // 1-based, ascending
    std::vector<std::string> selected;    // what those lines set
    std::vector<std::string> missing;     // wanted entries that matched nothing
};

struct TraceSpec {
    std::vector<std::string> events;     // "subsystem/event" or "subsystem"
    std::vector<std::string> functions;  // names or globs (* ? [...])
    int64_t buffer_kb = 0;               // per CPU; 0 keeps the kernel's size
    std::optional<FilterHint> hint;
};

// The extent check before the steps (docs/architecture.md, "Before the
// steps"): a read-only mount of its own, a FIEMAP of each file, umount.
struct ExtentCheck {
    std::string mountpoint;  // not the steps' mountpoint
    std::string fstype;
    std::string options;     // mount(8) words; "ro" is always added
    std::vector<std::string> files;  // paths inside the filesystem, "/f1.bin"
};

struct RunSpec {
    int version = 1;
    std::vector<std::string> modules;  // informational
    std::string disk;
    std::string mountpoint = "/mnt";
    std::string fstype;  // empty: raw disk, no mount step allowed
    std::string mount_options;
    MountOptions mount;
    std::vector<std::pair<std::string, std::string>> queue;  // in the order given
    std::optional<Marker> marker;
    TraceSpec trace;
    int64_t step_timeout_s = 60;
    std::optional<ExtentCheck> extent_check;  // absent: no check
    std::vector<Step> steps;
};

// A run description the agent refuses. field() is where, e.g.
// "steps[2].length"; what() is "steps[2].length: <problem>".
class SpecError : public std::runtime_error {
public:
    SpecError(std::string field, const std::string& problem);
    const std::string& field() const { return field_; }

private:
    std::string field_;
};

RunSpec parse_run_spec(std::string_view json_text);

}  // namespace blkrig::agent
