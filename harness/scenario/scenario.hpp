// Scenarios: what a run puts in front of the device (kernel, disk, device
// and guest knobs) and the steps the guest agent performs, read from TOML.
// parse_scenario is pure (text in, Scenario or ScenarioError out) so it can
// be unit-tested and fuzzed. docs/scenarios.md is the reference.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace blkrig::scenario {

// A bad scenario: where (file, line, column) and what to change.
struct ScenarioError : std::runtime_error {
    ScenarioError(std::string file, int line, int column, const std::string& what);
    std::string file;
    int line;
    int column;
};

struct FileSpec {
    std::string path;  // inside the filesystem, e.g. "/f1.bin"
    uint64_t size_bytes = 0;
    std::string content = "random";  // random | zero | pattern
    uint64_t seed = 1;
    std::string layout = "contiguous";  // contiguous | fragmented | sparse
    unsigned extents = 0;               // fragmented
    std::vector<uint64_t> split_at;     // fragmented: file offsets where extents 2..N start
    std::vector<std::pair<uint64_t, uint64_t>> holes;  // sparse: [offset, length]
};

struct DiskSpec {
    std::string fs = "vfat";  // vfat | exfat | ext4 | ext2 | raw
    int fs_line = 0;          // where disk.fs was given (0: the default)
    uint64_t size_bytes = 64ull << 20;
    int size_line = 0;  // where disk.size was given (0: the default)
    unsigned fat_bits = 0;       // 0: mkfs chooses
    uint32_t cluster_bytes = 0;  // 0: mkfs chooses
    uint32_t block_bytes = 0;
    std::vector<FileSpec> files;
};

struct DeviceKnobs {
    uint32_t seg_max = 126;
    uint32_t size_max = 0;
    uint16_t num_queues = 1;
    uint16_t queue_size = 128;
    uint32_t logical_block_size = 512;
    bool write_cache = true;
    bool read_only = false;
    // A device process that dies is started again on the same socket and
    // trace; QEMU reconnects and the inflight region resumes its requests.
    bool restart_on_crash = false;
};

struct GuestKnobs {
    std::map<std::string, std::string> queue;  // /sys/block/vda/queue/<knob>
    unsigned memory_mb = 512;
    int memory_line = 0;  // where guest.memory was given (0: the default)
    std::string mount_options;
    unsigned step_timeout_s = 60;
    std::vector<std::string> programs;  // host programs put into the initramfs (e.g. "fio")
    // Which driver mounts an ext2 image: "ext2" (fs/ext2 built for the
    // catalogue kernel, module ext2mpage), "ext4" (ext4's), "auto" (ext2 when
    // the kernel has it).
    std::string ext2_driver = "auto";
    int ext2_driver_line = 0;  // where guest.ext2_driver was given (0: the default)
    uint64_t trace_buffer_kb = 0;  // ftrace's buffer per CPU; 0: sized from the steps (docs/scenarios.md)
};

struct Expect {
    std::optional<int64_t> ret;
    std::optional<std::string> error;   // errno name, e.g. "EIO"
    std::optional<uint64_t> bytes;
    std::optional<std::string> sha256;  // hex, or "file": the content the disk builder wrote
};

struct Step {
    std::string op;
    nlohmann::json args;  // what the agent gets (op included)
    Expect expect;
    int line = 0;
};

// A device fault for the whole run: a rule (docs/faults.md), optionally
// aimed at part of a file, which the run turns into sectors once the disk
// is built.
struct FaultSpec {
    std::string rule;
    std::string file;  // a [[disk.files]] path, or empty
    uint64_t offset = 0;
    uint64_t length = UINT64_MAX;  // to the end of the file
    int after_step = -1;           // armed once this step (index) has finished
    int until_step = -1;           // disarmed when this step (index) begins
    int line = 0;
};

// An [[expect]] table as written: checks::parse_expectation gives it
// meaning (docs/harness.md). Kept raw here so the scenario layer does not
// depend on the checks; lines point errors at the TOML.
struct ExpectTable {
    nlohmann::json values;                // key -> string, integer, float, boolean or list of them
    int line = 0;                         // the table's line
    std::map<std::string, int> key_lines;  // each key's line
};

// The crash model (docs/faults.md): the device cuts the power when the
// guest has finished step after_step, losing unflushed writes per mode.
struct PowerCutSpec {
    int after_step = -1;  // -1: no power cut
    std::string mode = "drop_all";  // drop_all | drop_random | keep_all
    uint64_t seed = 0;
    double share = 0.5;
    int line = 0;
};

// [[crash.promise]]: what `blkrig crash` holds each crash state to. The
// file's content its write steps up to durable_after_step leave is on the
// disk in every state that keeps that step's last flush; in the states
// before, each 4 KiB block of it holds the old or the new content, never
// anything else (docs/crash.md).
struct CrashPromise {
    std::string path;  // as the steps name it, under /mnt
    int durable_after_step = -1;
    std::vector<size_t> writes;  // the steps that change path, in order: its write steps and renames onto it
    int line = 0;
};

struct Scenario {
    std::string file;
    std::string name;
    std::string description;
    std::string kernel;  // empty: the caller's default
    unsigned timeout_s = 300;
    // The guest's FIEMAP of each file compared with the builder's extents,
    // before step 0 on a read-only mount of its own ([scenario] extent_check).
    bool extent_check = true;
    // What a run of it must be given ([scenario] needs): "disk-from" (it boots
    // on what an earlier run left), "control" (someone steers the device
    // during it). A matrix run skips such scenarios.
    std::vector<std::string> needs;
    int needs_line = 0;
    DiskSpec disk;
    DeviceKnobs device;
    GuestKnobs guest;
    std::vector<Step> steps;
    std::vector<FaultSpec> faults;
    std::vector<ExpectTable> expects;  // [[expect]]
    PowerCutSpec power_cut;
    std::vector<CrashPromise> promises;
    // [crash.check] boot: which crash states `blkrig crash` also boots a
    // guest on (mount, read each promised file, umount): "none", "flushes"
    // (one per epoch), "all". Empty: not given ("none" unless --boot says).
    std::string crash_boot;
    int crash_boot_line = 0;
    // [crash.check] torn: also enumerate torn writes (a prefix of an epoch,
    // then its next write cut after its first sector and after half).
    bool crash_torn = false;
};

inline constexpr const char* kMountpoint = "/mnt";

// The marker region the run gives the device past the disk: enough blocks
// for two markers per agent step.
inline constexpr uint32_t kMarkerSectors = 2048;

// The sectors of the device a run of it gets: the disk in whole logical
// blocks, then the marker region. Fault rules must start below it.
uint64_t device_capacity_sectors(const Scenario& sc);

Scenario parse_scenario(std::string_view text, const std::string& file);
Scenario load_scenario(const std::string& path);  // ScenarioError also for an unreadable file

// A file of [[expect]] tables only (`blkrig check RUN EXPECT.toml`).
std::vector<ExpectTable> parse_expect_file(std::string_view text, const std::string& file);


// "4M", "64K", "1G", "512" or an integer → bytes; nullopt if malformed.
std::optional<uint64_t> parse_size(std::string_view s);

// The disk builder's JSON spec for a disk.
nlohmann::json disk_json(const DiskSpec& d);

}  // namespace blkrig::scenario
