// What every launcher of a boot shares: the inputs checked, blkrig-device
// started on a socket in a short temporary folder and stopped so its trace
// is closed, the kernel command line, and boot.json.
#pragma once

#include "common/fd.hpp"

#include "launch/boot.hpp"
#include "common/temp_dir.hpp"
#include "launch/process.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace blkrig::launch::detail {

// Socket paths are limited to 108 bytes, and run folders can be deep: the
// socket (and whatever else needs a short path) lives in its own short
// temporary folder (/tmp/blkrig-XXXXXX), removed with everything in it. Its
// "owner" file names our pid: a later blkrig removes the folder of one that
// was killed outright (reap_stale_temp).
struct SocketDir {
    TempDir tmp;
    std::filesystem::path dir;
    SocketDir();
    std::filesystem::path socket() const { return dir / "vu.sock"; }
};

// The kernel, initramfs, disk and device exist (LaunchError if not); the run
// folder exists and holds no files of an earlier boot.
void prepare(const BootSpec& spec);

unsigned cpus(const BootSpec& spec);        // one per queue unless given
std::string kernel_cmdline(const BootSpec& spec);

// blkrig-device on socket, listening; nullopt (and res says why) if it did
// not start listening. With listen_fd (a socket listening on `socket`), the
// device serves that, and QEMU may connect at once: the connection waits in
// the backlog while the device starts. once: the device exits when that
// front end disconnects (--once), so it closes its trace while QEMU exits.
std::optional<Child> start_device(const BootSpec& spec, const std::filesystem::path& socket, BootResult& res, int listen_fd = -1,
                                  bool once = false);

// The guest's memory, which vhost-user needs in a file the device can map.
// Best: an unnamed file on a tmpfs of its own with huge=always, mounted
// nowhere (fsopen/fsmount: nothing to unmount, gone with its last
// descriptor), which QEMU maps 2 MiB-aligned and so with huge pages, as it
// does anonymous memory. A memfd (QEMU's own) has 4 KiB pages only, and
// the guest's page faults on it slow a boot under TCG (docs/performance.md,
// "Guest memory on huge pages"). Mounting needs CAP_SYS_ADMIN; where a step
// of it fails, the memfd, and `why` says which step and why.
struct GuestRam {
    UniqueFd fd;      // the file QEMU maps, or invalid: a memfd
    std::string why;  // when fd is invalid
    std::string backend() const { return fd.valid() ? "tmpfs-huge" : "memfd"; }
};
GuestRam guest_ram(unsigned memory_mb);
// QEMU's -object for it (the file's descriptor is passed at its number).
std::string guest_ram_object(const GuestRam& ram, unsigned memory_mb);

// A Unix socket listening on path (close-on-exec; LaunchError if not).
UniqueFd listen_unix(const std::filesystem::path& path);
// SIGTERM, so the device closes its trace; an ok outcome turns into
// device_failed if the device did not exit cleanly.
void stop_device(Child& device, const BootSpec& spec, BootResult& res);

// When the agent's hello and done records reached the host, as seconds
// since t0: the phase times in verdict.json. inotify on the results port's
// file (QEMU creates it once the guest opens the port); nothing in the
// guest is asked for them. fd() goes into the launcher's poll set, and
// update() is called whenever it is readable. Without inotify, fd() is -1
// and the times stay unknown.
class PortWatch {
public:
    PortWatch(const BootSpec& spec, std::chrono::steady_clock::time_point t0);
    ~PortWatch();
    PortWatch(const PortWatch&) = delete;
    PortWatch& operator=(const PortWatch&) = delete;
    int fd() const { return fd_; }
    void update();
    std::optional<double> hello_s, done_s;

private:
    void read_lines();
    int fd_ = -1;
    int dir_wd_ = -1, file_wd_ = -1;
    std::filesystem::path file_;
    std::string name_;
    std::chrono::steady_clock::time_point t0_;
    std::function<void()> on_done_;
    uint64_t offset_ = 0;
    std::string partial_;
};

bool console_has(const std::filesystem::path& p, std::string_view needle);
inline constexpr std::string_view kPanicText = "Kernel panic - not syncing";

// boot.json: the spec, the outcome, and what the launcher adds (exit
// statuses, URI, ...).
void write_boot_json(const BootSpec& spec, const BootResult& res, const nlohmann::json& launcher_fields);

}  // namespace blkrig::launch::detail
