// The direct launcher (QEMU started by blkrig), what every launcher shares,
// and the dispatch between launchers.
#include "launch/boot.hpp"

#include "folder/run_folder.hpp"
#include "launch/boot_common.hpp"
#include "launch/libvirt.hpp"
#include "launch/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

namespace blkrig::launch {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const char* to_string(BootOutcome o) {
    switch (o) {
    case BootOutcome::ok: return "ok";
    case BootOutcome::timeout: return "timeout";
    case BootOutcome::qemu_failed: return "qemu_failed";
    case BootOutcome::device_failed: return "device_failed";
    case BootOutcome::guest_panic: return "guest_panic";
    case BootOutcome::interrupted: return "interrupted";
    case BootOutcome::libvirt_failed: return "libvirt_failed";
    }
    return "?";
}

namespace detail {

namespace {
TempDir socket_temp_dir() {
    try {
        return TempDir("blkrig-", "/tmp");  // short: socket paths hold 108 bytes
    } catch (const std::system_error& e) {
        throw LaunchError(e.what());
    }
}
}  // namespace

SocketDir::SocketDir() : tmp(socket_temp_dir()), dir(tmp.path()) {
    std::ofstream(dir / "owner") << ::getpid() << "\n";
}

namespace {
void check_file(const fs::path& p, const char* what) {
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) throw LaunchError(fmt::format("{} {} does not exist or is not a file", what, p.string()));
}
}  // namespace

void prepare(const BootSpec& spec) {
    check_file(spec.kernel, "kernel");
    check_file(spec.initrd, "initramfs");
    check_file(spec.disk, "disk image");
    check_file(spec.device, "blkrig-device binary");
    fs::create_directories(spec.out_dir);
    for (const char* f : {"console.log", "device.log", "trace.bin", "device.pid"}) fs::remove(spec.out_dir / f);
    for (const auto& [name, file] : spec.serial_ports) fs::remove(spec.out_dir / file);
}

unsigned cpus(const BootSpec& spec) { return spec.cpus ? spec.cpus : std::max(spec.num_queues, 1u); }

std::string kernel_cmdline(const BootSpec& spec) {
    std::string append = "console=ttyS0 quiet panic=-1";
    if (!spec.append.empty()) append += " " + spec.append;
    return append;
}

UniqueFd listen_unix(const fs::path& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.string().size() >= sizeof addr.sun_path) throw LaunchError(fmt::format("socket path {} is too long", path.string()));
    std::memcpy(addr.sun_path, path.c_str(), path.string().size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) throw LaunchError(fmt::format("socket: {}", std::strerror(errno)));
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd.get(), 8) != 0)
        throw LaunchError(fmt::format("cannot listen on {}: {}", path.string(), std::strerror(errno)));
    return fd;
}

std::optional<Child> start_device(const BootSpec& spec, const fs::path& socket, BootResult& res, int listen_fd, bool once) {
    const fs::path device_log = spec.out_dir / "device.log";
    std::vector<std::string> dev_argv = {spec.device.string()};
    if (listen_fd >= 0) dev_argv.insert(dev_argv.end(), {"--fd", std::to_string(listen_fd)});
    else dev_argv.insert(dev_argv.end(), {"--socket-path", socket.string()});
    dev_argv.insert(dev_argv.end(), {"--blk-file", spec.disk.string(), "--trace", (spec.out_dir / "trace.bin").string(), "--num-queues",
                                     std::to_string(spec.num_queues)});
    if (once) dev_argv.push_back("--once");
    // Each process continues the trace the one before left, writing through.
    if (spec.restart_on_crash) dev_argv.push_back("--trace-continue");
    dev_argv.insert(dev_argv.end(), spec.device_args.begin(), spec.device_args.end());
    Child device("blkrig-device", dev_argv, device_log.string(), false, listen_fd);
    std::ofstream(spec.out_dir / "device.pid") << device.pid() << "\n";
    if (listen_fd >= 0) return device;

    // The device's socket appears only once it listens.
    const auto dev_deadline = Clock::now() + std::chrono::seconds(10);
    while (!fs::exists(socket)) {
        if (device.poll() || Clock::now() > dev_deadline) {
            device.terminate(std::chrono::milliseconds(500));
            res.outcome = BootOutcome::device_failed;
            res.message = fmt::format("blkrig-device did not start listening ({}); device.log:\n{}", device.describe_exit(),
                                      tail_lines(device_log, 20));
            return std::nullopt;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return device;
}

void stop_device(Child& device, const BootSpec& spec, BootResult& res) {
    device.terminate(std::chrono::milliseconds(5000));
    if (res.outcome != BootOutcome::ok || !device.status()) return;
    const int st = *device.status();
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        res.outcome = BootOutcome::device_failed;
        res.message = fmt::format("blkrig-device {} at shutdown; device.log:\n{}", device.describe_exit(),
                                  tail_lines((spec.out_dir / "device.log").string(), 20));
    }
}

bool console_has(const fs::path& p, std::string_view needle) {
    std::ifstream in(p, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find(needle) != std::string::npos;
}

PortWatch::PortWatch(const BootSpec& spec, Clock::time_point t0) : t0_(t0), on_done_(spec.on_done) {
    for (const auto& [port, file] : spec.serial_ports)
        if (port == "blkrig.results") file_ = spec.out_dir / file;
    if (file_.empty()) return;
    name_ = file_.filename().string();
    fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd_ < 0) return;
    // The folder until QEMU creates the file, then the file alone: the
    // folder's other files (console.log, trace.bin) change all the time.
    dir_wd_ = ::inotify_add_watch(fd_, file_.parent_path().c_str(), IN_CREATE);
    update();
}

PortWatch::~PortWatch() {
    if (fd_ >= 0) ::close(fd_);
}

void PortWatch::update() {
    if (fd_ < 0) return;
    alignas(inotify_event) char buf[4096];
    while (::read(fd_, buf, sizeof buf) > 0) {
    }
    if (file_wd_ < 0) {
        file_wd_ = ::inotify_add_watch(fd_, file_.c_str(), IN_MODIFY);
        if (file_wd_ < 0) return;  // not there yet
        if (dir_wd_ >= 0) ::inotify_rm_watch(fd_, dir_wd_);
        dir_wd_ = -1;
    }
    read_lines();
}

void PortWatch::read_lines() {
    std::ifstream in(file_, std::ios::binary);
    if (!in.seekg(static_cast<std::streamoff>(offset_))) return;
    const std::string more((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (more.empty()) return;
    offset_ += more.size();
    partial_ += more;
    const double now = std::chrono::duration<double>(Clock::now() - t0_).count();
    size_t start = 0;
    for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
        const auto j = nlohmann::json::parse(std::string_view(partial_).substr(start, nl - start), nullptr, false);
        if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) continue;  // run/ names a bad line, not this
        const auto& type = j["type"].get_ref<const std::string&>();
        if (type == "hello" && !hello_s) hello_s = now;
        if (type == "done" && !done_s) {
            done_s = now;
            if (on_done_) on_done_();
        }
    }
    partial_.erase(0, start);
}

GuestRam guest_ram(unsigned memory_mb) {
    GuestRam ram;
    UniqueFd fsfd(::fsopen("tmpfs", FSOPEN_CLOEXEC));
    if (!fsfd.valid()) {
        ram.why = fmt::format("fsopen(tmpfs): {}", std::strerror(errno));
        return ram;
    }
    const std::string size = fmt::format("{}m", memory_mb + 2);
    const std::pair<const char*, const char*> opts[] = {{"huge", "always"}, {"size", size.c_str()}, {"mode", "0700"}};
    for (const auto& [k, v] : opts)
        if (::fsconfig(fsfd.get(), FSCONFIG_SET_STRING, k, v, 0) != 0) {
            ram.why = fmt::format("tmpfs {}={}: {}", k, v, std::strerror(errno));
            return ram;
        }
    if (::fsconfig(fsfd.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
        ram.why = fmt::format("creating the tmpfs: {}", std::strerror(errno));
        return ram;
    }
    const UniqueFd mnt(::fsmount(fsfd.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
    if (!mnt.valid()) {
        ram.why = fmt::format("fsmount: {}", std::strerror(errno));
        return ram;
    }
    // Unnamed: it holds the mount, and both go with the last descriptor.
    ram.fd = UniqueFd(::openat(mnt.get(), ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!ram.fd.valid()) ram.why = fmt::format("a file on the tmpfs: {}", std::strerror(errno));
    return ram;
}

std::string guest_ram_object(const GuestRam& ram, unsigned memory_mb) {
    if (!ram.fd.valid()) return fmt::format("memory-backend-memfd,id=mem,size={}M,share=on", memory_mb);
    // QEMU opens the path, which reopens our file; 2 MiB alignment lets the
    // kernel map it with huge pages.
    return fmt::format("memory-backend-file,id=mem,size={}M,share=on,mem-path=/proc/self/fd/{},align=2M", memory_mb, ram.fd.get());
}

void write_boot_json(const BootSpec& spec, const BootResult& res, const nlohmann::json& launcher_fields) {
    nlohmann::json j = {{"kernel", spec.kernel.string()},
                        {"initrd", spec.initrd.string()},
                        {"disk", spec.disk.string()},
                        {"append", kernel_cmdline(spec)},
                        {"memory_mb", spec.memory_mb},
                        {"num_queues", spec.num_queues},
                        {"cpus", cpus(spec)},
                        {"queue_size", spec.queue_size},
                        {"device_args", spec.device_args},
                        {"qemu_args", spec.qemu_args},
                        {"launcher", to_string(spec.launcher)},
                        {"outcome", to_string(res.outcome)},
                        {"message", res.message},
                        {"seconds", res.seconds}};
    if (res.hello_s) j["hello_s"] = *res.hello_s;
    if (res.done_s) j["done_s"] = *res.done_s;
    if (spec.restart_on_crash) {
        j["restart_on_crash"] = true;
        j["restarts"] = nlohmann::json::array();
        for (const auto& r : res.restarts) j["restarts"].push_back({{"at_s", r.at_s}, {"previous_exit", r.exit}, {"listen_s", r.listen_s}});
    }
    j.update(launcher_fields);
    folder::write_atomic(spec.out_dir / "boot.json", j.dump(2) + "\n");
}

}  // namespace detail

namespace {

// Waits for a signal or until deadline; returns the signal number, or 0 on timeout.
// The port watch is updated when its fd is readable.
int wait_signal(int sig_fd, Clock::time_point deadline, detail::PortWatch& watch) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return 0;
    pollfd p[2] = {{sig_fd, POLLIN, 0}, {watch.fd(), POLLIN, 0}};
    const int r = ::poll(p, 2, static_cast<int>(std::min<long long>(left, 1000)));
    if (r > 0 && p[1].revents) watch.update();
    if (r <= 0 || !(p[0].revents & POLLIN)) return -1;  // re-check children and the deadline
    signalfd_siginfo si{};
    if (::read(sig_fd, &si, sizeof si) != sizeof si) return -1;
    return static_cast<int>(si.ssi_signo);
}

// QEMU started by blkrig itself.
BootResult boot_qemu(const BootSpec& spec) {
    detail::prepare(spec);
    const fs::path console = spec.out_dir / "console.log";
    const fs::path device_log = spec.out_dir / "device.log";

    const int sig_fd = make_signal_fd();
    struct CloseFd {
        int fd;
        ~CloseFd() { ::close(fd); }
    } close_sig{sig_fd};

    const auto t0 = Clock::now();
    detail::SocketDir sock;
    BootResult res;

    // Our own listening socket, handed to the device: QEMU starts at once
    // instead of after the device listens, and a device started again
    // after a crash serves the same socket. Without a restart, the device
    // ends with QEMU's connection and closes its trace while QEMU exits.
    const UniqueFd listening = detail::listen_unix(sock.socket());
    const int listen_fd = listening.get();
    const bool once = !spec.restart_on_crash;
    auto started = detail::start_device(spec, sock.socket(), res, listen_fd, once);
    if (!started) return res;
    Child& device = *started;

    const unsigned cpus = detail::cpus(spec);
    const std::string append = detail::kernel_cmdline(spec);
    // vhost-user needs guest RAM the device can map (detail::guest_ram).
    // Multi-threaded TCG runs each vCPU on a host thread of its own.
    const detail::GuestRam ram = detail::guest_ram(spec.memory_mb);
    std::vector<std::string> qemu_argv = {
        spec.qemu, "-M", "q35,memory-backend=mem", "-accel", cpus > 1 ? "tcg,thread=multi" : "tcg", "-object",
        detail::guest_ram_object(ram, spec.memory_mb), "-m", std::to_string(spec.memory_mb),
        "-smp", std::to_string(cpus), "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-kernel", spec.kernel.string(),
        "-initrd", spec.initrd.string(), "-append", append, "-chardev",
        // reconnect=1: QEMU tries the socket again every second after the device went away.
        fmt::format("socket,id=c0,path={}{}", sock.socket().string(), spec.restart_on_crash ? ",reconnect=1" : ""),
        "-device", fmt::format("vhost-user-blk-pci,chardev=c0,num-queues={},queue-size={}", spec.num_queues, spec.queue_size)};
    if (!spec.serial_ports.empty()) {
        qemu_argv.insert(qemu_argv.end(), {"-device", "virtio-serial-pci,id=vser0"});
        for (size_t i = 0; i < spec.serial_ports.size(); ++i) {
            const auto& [name, file] = spec.serial_ports[i];
            const fs::path path = spec.out_dir / file;
            qemu_argv.insert(qemu_argv.end(), {"-chardev", fmt::format("file,id=port{},path={}", i, path.string()), "-device",
                                               fmt::format("virtserialport,bus=vser0.0,chardev=port{},name={}", i, name)});
        }
    }
    if (spec.interactive) {
        // Raw terminal (signal=off: Ctrl-C goes to the guest), logged as well.
        qemu_argv.insert(qemu_argv.end(), {"-chardev", fmt::format("stdio,id=ser0,signal=off,logfile={}", console.string()), "-serial",
                                           "chardev:ser0"});
    } else {
        qemu_argv.insert(qemu_argv.end(), {"-serial", "stdio"});
    }
    qemu_argv.insert(qemu_argv.end(), spec.qemu_args.begin(), spec.qemu_args.end());
    Child qemu("qemu", qemu_argv, spec.interactive ? std::string() : console.string(), false, ram.fd.get());
    detail::PortWatch watch(spec, t0);

    const auto deadline = spec.interactive ? Clock::time_point::max() : Clock::now() + std::chrono::seconds(spec.timeout_s);
    std::optional<Clock::time_point> device_done;
    for (;;) {
        int sig = wait_signal(sig_fd, device_done ? std::min(deadline, *device_done + std::chrono::seconds(10)) : deadline, watch);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || interrupted_by()) {
            note_interrupt(sig > 0 ? sig : interrupted_by());
            sig = interrupted_by();
            res.outcome = BootOutcome::interrupted;
            res.message = fmt::format("interrupted by signal {}", sig);
            break;
        }
        if (qemu.poll()) {
            const int st = *qemu.status();
            if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
                res.outcome = BootOutcome::qemu_failed;
                res.message = fmt::format("QEMU {}; console.log:\n{}", qemu.describe_exit(), tail_lines(console, 20));
            } else if (detail::console_has(console, detail::kPanicText)) {
                // panic=-1 with -no-reboot makes QEMU exit 0 on a panic too.
                res.outcome = BootOutcome::guest_panic;
                res.message = fmt::format("the guest kernel panicked; console.log:\n{}", tail_lines(console, 20));
            }
            break;
        }
        if (device.poll() && spec.restart_on_crash && res.restarts.size() < spec.max_restarts) {
            // The listening socket is ours and still open: the new process
            // serves it, and QEMU's reconnection waits in its backlog.
            const auto t_restart = Clock::now();
            BootResult::Restart r{std::chrono::duration<double>(t_restart - t0).count(), device.describe_exit(), 0};
            std::ofstream(device_log, std::ios::app) << fmt::format("blkrig: blkrig-device {}; starting it again (restart {})\n", r.exit,
                                                                    res.restarts.size() + 1);
            auto again = detail::start_device(spec, sock.socket(), res, listen_fd, once);
            if (!again) break;
            device = std::move(*again);
            r.listen_s = std::chrono::duration<double>(Clock::now() - t_restart).count();
            res.restarts.push_back(r);
            continue;
        }
        if (device.poll() && once && WIFEXITED(*device.status()) && WEXITSTATUS(*device.status()) == 0) {
            // QEMU closed the connection, as it does on its way out: give
            // it time to exit before calling that a failure.
            if (!device_done) device_done = Clock::now();
            if (Clock::now() - *device_done < std::chrono::seconds(10)) continue;
            res.outcome = BootOutcome::device_failed;
            res.message = fmt::format("QEMU closed its connection to blkrig-device but did not exit within 10 s; console.log:\n{}",
                                      tail_lines(console, 20));
            break;
        }
        if (device.poll()) {
            res.outcome = BootOutcome::device_failed;
            res.message = fmt::format("blkrig-device {} while the guest ran; device.log:\n{}", device.describe_exit(),
                                      tail_lines(device_log, 20));
            break;
        }
        if (sig == 0) {
            res.outcome = BootOutcome::timeout;
            res.message = fmt::format("the guest did not power off within {} s; console.log:\n{}", spec.timeout_s, tail_lines(console, 20));
            break;
        }
    }
    qemu.terminate(std::chrono::milliseconds(3000));
    // SIGTERM makes the device close its trace with an end record.
    detail::stop_device(device, spec, res);
    res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    watch.update();  // what QEMU wrote last
    res.hello_s = watch.hello_s;
    res.done_s = watch.done_s;
    nlohmann::json memory = {{"backend", ram.backend()}};
    if (!ram.why.empty()) memory["why"] = ram.why;
    detail::write_boot_json(spec, res, {{"qemu_exit", qemu.describe_exit()}, {"device_exit", device.describe_exit()}, {"guest_memory", memory}});
    return res;
}

}  // namespace

const char* to_string(Launcher l) { return l == Launcher::libvirt ? "libvirt" : "qemu"; }

BootResult boot(const BootSpec& spec) {
    if (spec.launcher == Launcher::libvirt && spec.restart_on_crash)
        throw LaunchError("device.restart_on_crash needs the direct launcher (--launcher qemu): libvirt's domain is not given reconnect=");
    return spec.launcher == Launcher::libvirt ? boot_libvirt(spec) : boot_qemu(spec);
}

}  // namespace blkrig::launch
