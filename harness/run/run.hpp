// `blkrig run`: one scenario, end to end. Builds the disk and the
// initramfs, boots the kernel on blkrig-device with the guest agent, brings
// back the device trace, the guest's events and step results, checks the
// expectations and writes verdict.json. Everything lands in one run folder:
//   scenario.toml  disk-spec.json  disk.img  extents.json  run.json  initrd.cpio
//   console.log  device.log  trace.bin  results.jsonl  events.txt
//   guest-events.jsonl  guest-knobs.json  boot.json  verdict.json  report.html
// and .blkrig-run / .blkrig-lock, which make it ours (folder/run_folder.hpp).
#pragma once

#include "launch/boot.hpp"
#include "scenario/scenario.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace blkrig::run {

struct Tools {
    std::filesystem::path device;       // blkrig-device
    std::filesystem::path agent;        // blkrig-agent (static)
    std::filesystem::path mkdisk;       // blkrig-mkdisk
    std::filesystem::path mkinitramfs;  // guest-driver/image/mkinitramfs
};

struct RunOptions {
    std::filesystem::path kernel_dir;  // fetched catalogue kernel: vmlinuz, modules/
    std::string kernel_name;
    std::filesystem::path out_dir;
    Tools tools;
    unsigned timeout_s = 0;  // 0: the scenario's
    std::string control_path;  // the device's JSON-RPC socket; empty: none
    // Boot on the disk an earlier run left (e.g. what survived its power
    // cut) instead of building one: its disk.img and extents.json are copied.
    std::filesystem::path disk_from;
    // false: no extent check before the steps, whatever the scenario says
    // (--no-extent-check).
    bool extent_check = true;
    // true: run the extent check in the guest even when an earlier boot of
    // the same kernel and modules checked the same image (run/extent_memo.hpp).
    bool fresh_extent_check = false;
    // false: the guest traces nothing (no block events, no mpage functions),
    // to show that tracing does not change the requests (--no-guest-trace).
    bool guest_trace = true;
    // More fault rules for the device (`--faults FILE`, already checked):
    // copied into the run folder as fault-rules and given to the device.
    std::filesystem::path faults_file;
    // Who starts QEMU (launch::BootSpec::launcher, libvirt_uri).
    launch::Launcher launcher = launch::Launcher::qemu;
    std::string libvirt_uri;
    // The device also writes write-log.bin (every write, flush and marker,
    // dm-log-writes), and the disk as it was before the boot is kept as
    // disk-before.img: what `blkrig crash` builds its states from.
    bool record_writes = false;
};

enum class Outcome { pass = 0, fail = 1, bad_input = 2, infra = 3, interrupted = 130 };

struct RunResult {
    Outcome outcome = Outcome::infra;
    std::string summary;               // for people
    std::vector<std::string> problems; // each failed expectation or infrastructure problem
};

RunResult run(const scenario::Scenario& sc, const RunOptions& o);

// `blkrig vm`: the scenario's kernel, disk, device and guest knobs, with a
// busybox shell on this terminal instead of steps. Prints where the device
// trace is, so `blkrig trace` can read it from another terminal meanwhile.
// tools.agent is unused; init_shell is guest-driver/image/init-shell.sh.
RunResult vm(const scenario::Scenario& sc, const RunOptions& o, const std::filesystem::path& init_shell);

inline constexpr uint32_t kMarkerSectors = scenario::kMarkerSectors;

}  // namespace blkrig::run
