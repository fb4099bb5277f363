// What the agent reports on the results port: typed records, each encoded
// as one JSON line (docs/agent-protocol.md, "Results").
#pragma once

#include "agent_core/run_spec.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace blkrig::agent {

struct Hello {
    std::string kernel;  // uname -r
    std::vector<std::string> modules;  // loaded from load-order
    std::vector<std::string> functions_traced;
    std::vector<std::string> functions_missing;  // wanted, matched nothing
    // The lines of available_filter_functions that set functions_traced,
    // when the kernel confirmed them (empty: set by name, or nothing): the
    // host keeps them as the next boot's FilterHint.
    std::vector<uint64_t> filter_lines;
    std::string filter_hint = "none";  // the run's FilterHint: none | used | refused (the list was read after all)
    std::vector<std::string> events;
    std::vector<std::string> events_missing;
    std::vector<std::pair<std::string, std::string>> queue;  // read back after setting
    // /sys/block/<disk>/ attributes after the knobs were set (readback.hpp)
    std::vector<std::pair<std::string, std::string>> sysfs;
    std::string cpus_online;  // "0-1"
    int64_t t_ns = 0;  // CLOCK_MONOTONIC
};

struct Extent {
    uint64_t logical = 0;
    uint64_t physical = 0;
    uint64_t length = 0;
    uint32_t flags = 0;  // FIEMAP_EXTENT_*; 0 from the FIBMAP fallback
};

struct StepResult {
    size_t index = 0;
    Op op = Op::sync;
    int ret = 0;             // 0 or -1
    int err = 0;             // errno of the failing call, 0 if none
    std::string error;       // errno's name, or a text ("timeout")
    std::string call;        // the failing call, e.g. "pread"
    std::optional<uint64_t> bytes;
    std::optional<std::string> xxh128;  // read, write, mmap_write: XXH3-128 of the bytes
    std::optional<std::string> sha256;  // only for a step whose spec asks (Step::sha256)
    std::optional<std::vector<Extent>> extents;
    std::optional<std::string> mount_options;  // mount: the options /proc/self/mounts shows
    int64_t t_start_ns = 0;  // CLOCK_MONOTONIC, around the op itself
    int64_t t_end_ns = 0;
    int64_t marker_begin = -1;  // marker index read before the op, -1 if none
    int64_t marker_end = -1;
    std::string marker_error;   // why a marker read failed

    // Records a failed system call.
    void fail(std::string failed_call, int errnum);
    // Records a failure that is not one call's errno.
    void fail_text(std::string text);
};

// What the agent did to the disk before step 0 (docs/agent-protocol.md,
// "before_steps"): the extent check's FIEMAPs, and the page cache of the
// disk dropped, with the resident pages counted before and after.
struct ExtentCheckResult {
    std::string error;  // the check's mount or umount failed; empty if not
    std::vector<std::pair<std::string, StepResult>> files;  // path inside the fs, its FIEMAP
};

struct BeforeSteps {
    std::optional<ExtentCheckResult> extent_check;  // absent: not asked for
    uint64_t disk_pages = 0;       // the disk's size in pages
    uint64_t resident_before = 0;  // pages of the disk in the page cache before the drop
    uint64_t resident_after = 0;   // and after it: 0 unless the drop failed
    // /proc/meminfo Buffers: every page of every block device's page cache,
    // including pages mincore does not count (read in part through
    // buffer heads, so not uptodate). Only the disk is a block device here.
    int64_t buffers_kb_before = -1;  // -1: not read
    int64_t buffers_kb_after = -1;
    std::string cache_error;       // why the drop or the count failed
    // /sys/kernel/rcu_expedited before the agent's set-up, and read back
    // after the agent set it back, before step 0 ("" where unreadable).
    std::string rcu_expedited_before;
    std::string rcu_expedited_after;
    int64_t t_start_ns = 0;        // CLOCK_MONOTONIC, around all of it
    int64_t t_end_ns = 0;
};

struct ErrorRecord {
    std::string what;
};

struct Done {
    size_t steps = 0;  // step records sent
};

// Each returns one line, newline included.
std::string encode(const Hello& h);
std::string encode(const StepResult& r);
std::string encode(const BeforeSteps& b);
std::string encode(const ErrorRecord& e);
std::string encode(const Done& d);

// A step line back into its record (PID 1 reads what a step's child sent);
// nothing if the line is not a complete step record.
std::optional<StepResult> decode_step(std::string_view line);

// "EIO" for EIO; "errno 4242" for numbers without a name.
std::string errno_name(int errnum);

}  // namespace blkrig::agent
