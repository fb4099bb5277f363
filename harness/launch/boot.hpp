// One guest boot on blkrig-device: start the device on a disk image, start
// QEMU (TCG, vhost-user-blk-pci) with a kernel and initramfs, directly or
// through libvirt, wait for the guest to power off, stop the device so the
// trace is closed, and leave everything in a run folder. Nothing the boot
// started outlives it.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace blkrig::launch {

// Who starts QEMU: blkrig itself (direct), or libvirt (a transient domain,
// launch/libvirt.hpp).
enum class Launcher { qemu, libvirt };
const char* to_string(Launcher l);

struct BootSpec {
    std::filesystem::path kernel;  // bzImage / vmlinuz
    std::filesystem::path initrd;
    std::filesystem::path disk;
    std::filesystem::path out_dir;
    std::string append;            // extra kernel command line
    unsigned memory_mb = 512;
    unsigned num_queues = 1;
    // vCPUs; 0: one per queue, so blk-mq maps a CPU to every queue (with one
    // vCPU every request goes to queue 0).
    unsigned cpus = 0;
    unsigned queue_size = 128;
    unsigned timeout_s = 120;
    std::string qemu = "qemu-system-x86_64";
    std::filesystem::path device;  // blkrig-device binary
    std::vector<std::string> device_args;  // extra blkrig-device options
    std::vector<std::string> qemu_args;    // extra QEMU options (e.g. virtio-serial ports)
    // Named virtio-serial ports whose guest output is saved to out_dir/FILE:
    // {"blkrig.results", "results.jsonl"} appears in the guest as a port of
    // that name (/sys/class/virtio-ports/*/name).
    std::vector<std::pair<std::string, std::string>> serial_ports;
    // The guest console on this terminal (and still logged to console.log);
    // no timeout applies.
    bool interactive = false;
    Launcher launcher = Launcher::qemu;
    // A device that dies while the guest runs is started again (same socket,
    // same trace, continued) up to max_restarts times; QEMU's chardev gets
    // reconnect=1. Direct launcher only.
    bool restart_on_crash = false;
    unsigned max_restarts = 20;
    // libvirt: the connection URI; empty: the embedded QEMU driver on a
    // root folder of this boot's own (qemu:///embed?root=...), removed after.
    std::string libvirt_uri;
    // Called once, on the launcher's thread, when the agent's done record
    // reaches the host: what the guest sent is complete, and the caller may
    // start on it while the guest syncs and powers off. It must not throw.
    std::function<void()> on_done;
};

// libvirt_failed: the libvirt connection could not be opened, or libvirt
// refused or failed to start the domain.
enum class BootOutcome { ok, timeout, qemu_failed, device_failed, guest_panic, interrupted, libvirt_failed };

struct BootResult {
    BootOutcome outcome = BootOutcome::ok;
    std::string message;  // what went wrong, with log tails
    double seconds = 0;
    // Since the boot began: the agent's hello and done records seen by the
    // host (the results port), unknown if they never came.
    std::optional<double> hello_s, done_s;
    // Device processes that died and were started again (restart_on_crash).
    struct Restart {
        double at_s;        // since the boot began
        std::string exit;   // how the process before ended
        double listen_s;    // until the new one listened
    };
    std::vector<Restart> restarts;
};

const char* to_string(BootOutcome o);

// Files in out_dir: console.log (guest serial + QEMU's own messages),
// device.log, trace.bin, device.pid (the device process serving now),
// boot.json (spec, launcher, outcome, exit statuses, restarts);
// with libvirt also domain.xml and qemu.log (QEMU's own messages, when the
// log is on this host).
BootResult boot(const BootSpec& spec);

}  // namespace blkrig::launch
