// The libvirt launcher: a transient domain through the libvirt C API, its
// lifecycle followed through libvirt's events, torn down on every path.
#include "launch/libvirt.hpp"

#include "launch/boot_common.hpp"
#include "launch/process.hpp"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

namespace blkrig::launch {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string xml_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '\'': out += "&apos;"; break;
        case '"': out += "&quot;"; break;
        default: out += c;
        }
    }
    return out;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

std::string embed_uri(const fs::path& root) { return "qemu:///embed?root=" + root.string(); }

fs::path embed_root(const std::string& uri) {
    constexpr std::string_view prefix = "qemu:///embed?";
    if (uri.rfind(prefix, 0) != 0) return {};
    std::string_view query = std::string_view(uri).substr(prefix.size());
    while (!query.empty()) {
        const size_t amp = query.find('&');
        const std::string_view param = query.substr(0, amp);
        if (param.rfind("root=", 0) == 0) {
            // libvirt unescapes query values: so do we.
            std::string root;
            const std::string_view v = param.substr(5);
            for (size_t i = 0; i < v.size(); ++i) {
                if (v[i] == '%' && i + 2 < v.size() && hex_value(v[i + 1]) >= 0 && hex_value(v[i + 2]) >= 0) {
                    root += static_cast<char>(hex_value(v[i + 1]) * 16 + hex_value(v[i + 2]));
                    i += 2;
                } else {
                    root += v[i];
                }
            }
            return root;
        }
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
    }
    return {};
}

std::string embed_qemu_conf() {
    return "# Written by blkrig for libvirt's embedded QEMU driver.\n"
           "user = \"root\"\n"
           "group = \"root\"\n"
           "security_driver = \"none\"\n"
           "stdio_handler = \"file\"\n";
}

std::string domain_xml(const BootSpec& spec, const std::string& name, const fs::path& socket, const std::string& emulator) {
    const auto e = [](const auto& v) { return xml_escape(fmt::format("{}", v)); };
    std::ostringstream x;
    x << "<domain type='qemu'" << (spec.qemu_args.empty() ? "" : " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'") << ">\n";
    x << "  <name>" << e(name) << "</name>\n";
    x << "  <memory unit='MiB'>" << spec.memory_mb << "</memory>\n";
    x << "  <vcpu>" << detail::cpus(spec) << "</vcpu>\n";
    // vhost-user needs guest RAM the device can map.
    x << "  <memoryBacking>\n    <source type='memfd'/>\n    <access mode='shared'/>\n  </memoryBacking>\n";
    x << "  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n";
    x << "    <kernel>" << e(spec.kernel.string()) << "</kernel>\n";
    x << "    <initrd>" << e(spec.initrd.string()) << "</initrd>\n";
    x << "    <cmdline>" << e(detail::kernel_cmdline(spec)) << "</cmdline>\n  </os>\n";
    // ACPI: the guest powers off through it, as on the direct launcher's q35.
    x << "  <features>\n    <acpi/>\n  </features>\n";
    // A panic (panic=-1) resets the guest: every end of the guest ends the domain.
    x << "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n";
    x << "  <devices>\n";
    if (!emulator.empty()) x << "    <emulator>" << e(emulator) << "</emulator>\n";
    // The device's own settings (seg_max, block size, write cache, ...) come
    // from the device over vhost-user; queue count and size are QEMU's.
    x << "    <disk type='vhostuser' device='disk'>\n";
    x << "      <driver name='qemu' type='raw' queues='" << spec.num_queues << "' queue_size='" << spec.queue_size << "'/>\n";
    x << "      <source type='unix' path='" << e(socket.string()) << "'>\n        <reconnect enabled='no'/>\n      </source>\n";
    x << "      <target dev='vda' bus='virtio'/>\n    </disk>\n";
    // Nothing the direct launcher's -nodefaults leaves out either.
    x << "    <controller type='usb' model='none'/>\n";
    x << "    <serial type='file'>\n      <source path='" << e((spec.out_dir / "console.log").string()) << "'/>\n";
    x << "      <target port='0'/>\n    </serial>\n";
    for (const auto& [port, file] : spec.serial_ports) {
        x << "    <channel type='file'>\n      <source path='" << e((spec.out_dir / file).string()) << "'/>\n";
        x << "      <target type='virtio' name='" << e(port) << "'/>\n    </channel>\n";
    }
    x << "    <memballoon model='none'/>\n";
    x << "  </devices>\n";
    if (!spec.qemu_args.empty()) {
        x << "  <qemu:commandline>\n";
        for (const auto& a : spec.qemu_args) x << "    <qemu:arg value='" << e(a) << "'/>\n";
        x << "  </qemu:commandline>\n";
    }
    x << "</domain>\n";
    return x.str();
}

namespace {

// libvirt is opened when a boot first asks for it, not linked: its library
// and everything it pulls in (about 50 shared objects) took some 25 ms to
// map and relocate at every start of blkrig, which most runs, and every
// `blkrig check` or `report`, never use. The headers still give the types.
struct LibvirtApi {
    decltype(&::virConnectClose) virConnectClose;
    decltype(&::virConnectDomainEventDeregisterAny) virConnectDomainEventDeregisterAny;
    decltype(&::virConnectDomainEventRegisterAny) virConnectDomainEventRegisterAny;
    decltype(&::virConnectOpen) virConnectOpen;
    decltype(&::virDomainCreateXML) virDomainCreateXML;
    decltype(&::virDomainDestroy) virDomainDestroy;
    decltype(&::virDomainFree) virDomainFree;
    decltype(&::virDomainGetName) virDomainGetName;
    decltype(&::virDomainGetState) virDomainGetState;
    decltype(&::virDomainIsActive) virDomainIsActive;
    decltype(&::virEventAddTimeout) virEventAddTimeout;
    decltype(&::virEventRegisterDefaultImpl) virEventRegisterDefaultImpl;
    decltype(&::virEventRemoveTimeout) virEventRemoveTimeout;
    decltype(&::virEventRunDefaultImpl) virEventRunDefaultImpl;
    decltype(&::virGetLastErrorMessage) virGetLastErrorMessage;
    decltype(&::virSetErrorFunc) virSetErrorFunc;
};

const LibvirtApi& lv() {
    static const LibvirtApi api = [] {
        void* h = ::dlopen("libvirt.so.0", RTLD_NOW | RTLD_LOCAL);
        if (!h) throw LaunchError(fmt::format("the libvirt launcher needs libvirt (Debian package libvirt0): {}", ::dlerror()));
        LibvirtApi a{};
        auto load = [h](auto& fn, const char* name) {
            fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(h, name));
            if (!fn) throw LaunchError(fmt::format("libvirt.so.0 has no {}: {}", name, ::dlerror()));
        };
        load(a.virConnectClose, "virConnectClose");
        load(a.virConnectDomainEventDeregisterAny, "virConnectDomainEventDeregisterAny");
        load(a.virConnectDomainEventRegisterAny, "virConnectDomainEventRegisterAny");
        load(a.virConnectOpen, "virConnectOpen");
        load(a.virDomainCreateXML, "virDomainCreateXML");
        load(a.virDomainDestroy, "virDomainDestroy");
        load(a.virDomainFree, "virDomainFree");
        load(a.virDomainGetName, "virDomainGetName");
        load(a.virDomainGetState, "virDomainGetState");
        load(a.virDomainIsActive, "virDomainIsActive");
        load(a.virEventAddTimeout, "virEventAddTimeout");
        load(a.virEventRegisterDefaultImpl, "virEventRegisterDefaultImpl");
        load(a.virEventRemoveTimeout, "virEventRemoveTimeout");
        load(a.virEventRunDefaultImpl, "virEventRunDefaultImpl");
        load(a.virGetLastErrorMessage, "virGetLastErrorMessage");
        load(a.virSetErrorFunc, "virSetErrorFunc");
        return a;
    }();
    return api;
}

}  // namespace

namespace {

std::string last_error() {
    const char* m = lv().virGetLastErrorMessage();
    return m ? m : "unknown libvirt error";
}

// libvirt's default error handler prints every error on stderr; ours are
// reported with their context instead.
void silent_errors(void*, virErrorPtr) {}

// libvirt's default event loop, run on a thread of its own while a boot
// uses a connection. Registered once per process, before any connection.
class EventLoop {
public:
    // log: where libvirt's own log goes (the embedded driver logs in this
    // process, on stderr by default), unless LIBVIRT_LOG_OUTPUTS says.
    explicit EventLoop(const fs::path& log) {
        static std::once_flag once;
        static int registered = -1;
        std::call_once(once, [&log] {
            // Read once, when libvirt initializes.
            ::setenv("LIBVIRT_LOG_OUTPUTS", fmt::format("3:file:{}", log.string()).c_str(), 0);
            lv().virSetErrorFunc(nullptr, silent_errors);
            registered = lv().virEventRegisterDefaultImpl();
        });
        if (registered < 0) throw LaunchError(fmt::format("libvirt's event loop cannot be set up: {}", last_error()));
        thread_ = std::thread([this] {
            while (!quit_)
                if (lv().virEventRunDefaultImpl() < 0) break;
        });
    }
    ~EventLoop() {
        quit_ = true;
        // A due timer wakes the loop so it sees quit_.
        const int t = lv().virEventAddTimeout(0, [](int, void*) {}, nullptr, nullptr);
        thread_.join();
        if (t >= 0) lv().virEventRemoveTimeout(t);
    }
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

private:
    std::atomic<bool> quit_{false};
    std::thread thread_;
};

// What the lifecycle events said about our domain, from the event thread.
struct Lifecycle {
    std::string name;
    int wake_fd = -1;  // eventfd the waiting thread polls
    std::mutex m;
    bool started = false;
    bool stopped = false;
    int stop_detail = -1;
    double started_s = 0, stopped_s = 0;
    Clock::time_point t0;

    void note(int event, int detail_code) {
        {
            std::lock_guard g(m);
            const double s = std::chrono::duration<double>(Clock::now() - t0).count();
            if (event == VIR_DOMAIN_EVENT_STARTED) {
                started = true;
                started_s = s;
            } else if (event == VIR_DOMAIN_EVENT_STOPPED) {
                stopped = true;
                stop_detail = detail_code;
                stopped_s = s;
            }
        }
        const uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
    }
};

int on_lifecycle(virConnectPtr, virDomainPtr dom, int event, int detail_code, void* opaque) {
    auto* lc = static_cast<Lifecycle*>(opaque);
    const char* n = lv().virDomainGetName(dom);
    if (n && lc->name == n) lc->note(event, detail_code);
    return 0;
}

const char* stop_reason(int d) {
    switch (d) {
    case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: return "shutdown";
    case VIR_DOMAIN_EVENT_STOPPED_DESTROYED: return "destroyed";
    case VIR_DOMAIN_EVENT_STOPPED_CRASHED: return "crashed";
    case VIR_DOMAIN_EVENT_STOPPED_MIGRATED: return "migrated";
    case VIR_DOMAIN_EVENT_STOPPED_SAVED: return "saved";
    case VIR_DOMAIN_EVENT_STOPPED_FAILED: return "failed";
    case VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: return "from_snapshot";
    default: return "unknown";
    }
}

// The connection, our callback, and the domain, undone in reverse on every
// path: a domain still there is destroyed (it is transient, so it is gone).
struct Session {
    virConnectPtr conn = nullptr;
    int callback = -1;
    virDomainPtr dom = nullptr;
    bool destroyed_by_us = false;
    bool gone = false;  // stopped, so the transient domain no longer exists

    void destroy() {
        if (dom && !gone && lv().virDomainIsActive(dom) == 1) {
            destroyed_by_us = true;
            lv().virDomainDestroy(dom);
        }
    }
    ~Session() {
        destroy();
        if (dom) lv().virDomainFree(dom);
        if (callback >= 0) lv().virConnectDomainEventDeregisterAny(conn, callback);
        if (conn) lv().virConnectClose(conn);
    }
};

// The binary the domain runs: a path as given, the default name left to
// libvirt (the host's own), another name looked up in PATH here.
std::string emulator_for(const std::string& qemu) {
    if (qemu.empty() || qemu == "qemu-system-x86_64") return {};
    if (qemu.find('/') != std::string::npos) return fs::absolute(qemu).string();
    if (const char* path = std::getenv("PATH")) {
        std::istringstream dirs(path);
        std::string d;
        while (std::getline(dirs, d, ':')) {
            std::error_code ec;
            const fs::path p = fs::path(d) / qemu;
            if (!d.empty() && fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0) return p.string();
        }
    }
    throw LaunchError(fmt::format("QEMU binary {} is not in PATH", qemu));
}

std::string domain_name() {
    std::random_device rd;
    return fmt::format("blkrig-{}-{:08x}", ::getpid(), rd());
}

// An embedded driver root needs its qemu.conf before the driver starts; a
// root someone else prepared keeps theirs.
void prepare_embed_root(const fs::path& root) {
    for (const fs::path& conf : {root / "etc" / "qemu.conf", root / "etc" / "qemu" / "qemu.conf"}) {
        if (fs::exists(conf)) continue;
        fs::create_directories(conf.parent_path());
        std::ofstream out(conf);
        out << embed_qemu_conf();
        if (!out) throw LaunchError(fmt::format("cannot write {}", conf.string()));
    }
}

// The embedded driver's QEMU is daemonized and has no autodestroy, so a
// killed blkrig would leave it running. A watcher forked before any thread
// holds the read end of a pipe: told QEMU's pid once the domain runs, it
// kills that QEMU and removes the run's temporary folder if the pipe closes
// without "ok" (blkrig died), and exits quietly otherwise.
class Reaper {
public:
    // name: the domain's; its QEMU is found by it if blkrig dies before it learnt the pid.
    Reaper(const fs::path& tmp_dir, const std::string& name) {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) return;
        const std::string dir = tmp_dir.string();
        const pid_t pid = ::fork();
        if (pid < 0) {
            ::close(p[0]);
            ::close(p[1]);
            return;
        }
        if (pid == 0) {
            ::close(p[1]);
            ::setsid();  // out of the terminal's process group: Ctrl-C is blkrig's to handle
            std::string got;
            char buf[64];
            for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) != 0;)
                if (n > 0) got.append(buf, static_cast<size_t>(n));
                else if (errno != EINTR) break;
            if (got.find("ok") == std::string::npos) {
                const long qemu = std::strtol(got.c_str(), nullptr, 10);
                if (qemu > 1) ::kill(static_cast<pid_t>(qemu), SIGKILL);
                // Started but not yet told (or still starting): QEMU's -name names the domain.
                const std::string tag = "guest=" + name + ",";
                for (int round = 0; round < 20; ++round) {
                    bool found = false;
                    std::error_code ec;
                    for (const auto& e : fs::directory_iterator("/proc", ec)) {
                        const std::string pid = e.path().filename().string();
                        if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
                        std::ifstream cmd(e.path() / "cmdline", std::ios::binary);
                        const std::string c{std::istreambuf_iterator<char>(cmd), std::istreambuf_iterator<char>()};
                        if (c.find(tag) != std::string::npos) {
                            ::kill(std::stoi(pid), SIGKILL);
                            found = true;
                        }
                    }
                    if (!found && round > 0) break;
                    ::usleep(100000);  // libvirt may still be starting it: look again
                }
                std::error_code ec;
                fs::remove_all(dir, ec);
            }
            ::_exit(0);
        }
        ::close(p[0]);
        fd_ = p[1];
        pid_ = pid;
    }
    ~Reaper() {
        if (fd_ < 0) return;
        [[maybe_unused]] auto r = ::write(fd_, "ok\n", 3);
        ::close(fd_);
        int st;
        while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
        }
    }
    Reaper(const Reaper&) = delete;
    Reaper& operator=(const Reaper&) = delete;
    void watch(pid_t qemu) {
        if (fd_ < 0 || qemu <= 1) return;
        const std::string line = fmt::format("{}\n", qemu);
        [[maybe_unused]] auto r = ::write(fd_, line.data(), line.size());
    }

private:
    int fd_ = -1;
    pid_t pid_ = -1;
};

// QEMU's pid, from the pid file the embedded driver keeps under its root; 0 if unknown.
pid_t embedded_qemu_pid(const fs::path& root, const std::string& name) {
    std::ifstream in(root / "run" / "qemu" / (name + ".pid"));
    long pid = 0;
    in >> pid;
    return static_cast<pid_t>(pid);
}

}  // namespace

BootResult boot_libvirt(const BootSpec& given) {
    if (given.interactive)
        throw LaunchError("the libvirt launcher has no console on this terminal: use the direct launcher (--launcher qemu) for it");
    // libvirt wants absolute paths, and QEMU does not run in our folder.
    BootSpec spec = given;
    for (fs::path* p : {&spec.kernel, &spec.initrd, &spec.disk, &spec.out_dir}) *p = fs::absolute(*p);
    detail::prepare(spec);
    const fs::path console = spec.out_dir / "console.log";
    const fs::path device_log = spec.out_dir / "device.log";
    for (const char* f : {"qemu.log", "libvirt.log", "domain.xml"}) fs::remove(spec.out_dir / f);
    const std::string emulator = emulator_for(spec.qemu);

    // Before any thread: libvirt's threads inherit the blocked signals, so
    // Ctrl-C reaches the signalfd.
    const int sig_fd = make_signal_fd();
    const int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0) {
        ::close(sig_fd);
        throw LaunchError(fmt::format("eventfd: {}", std::strerror(errno)));
    }
    struct CloseFds {
        int a, b;
        ~CloseFds() {
            ::close(a);
            ::close(b);
        }
    } close_fds{sig_fd, wake_fd};

    const auto t0 = Clock::now();
    // Declared first, removed last: the device's socket and a default
    // embedded driver root, which must outlive the connection.
    detail::SocketDir tmp;
    const std::string uri = spec.libvirt_uri.empty() ? embed_uri(tmp.dir / "libvirt") : spec.libvirt_uri;
    const fs::path root = embed_root(uri);
    BootResult res;
    Lifecycle lc;
    lc.name = domain_name();
    lc.wake_fd = wake_fd;
    lc.t0 = t0;
    nlohmann::json fields = {{"libvirt_uri", uri}, {"domain", lc.name}};
    detail::PortWatch watch(spec, t0);
    auto finish = [&](Child* device) {
        if (device) detail::stop_device(*device, spec, res);
        res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        watch.update();  // what QEMU wrote last
        res.hello_s = watch.hello_s;
        res.done_s = watch.done_s;
        if (device) fields["device_exit"] = device->describe_exit();
        {
            std::lock_guard g(lc.m);
            if (lc.started) fields["started_s"] = lc.started_s;
            if (lc.stopped) {
                fields["stopped_s"] = lc.stopped_s;
                fields["stop_reason"] = stop_reason(lc.stop_detail);
            }
        }
        detail::write_boot_json(spec, res, fields);
        return res;
    };
    auto libvirt_failed = [&](std::string what) {
        res.outcome = BootOutcome::libvirt_failed;
        res.message = std::move(what);
    };

    if (!root.empty()) prepare_embed_root(root);
    // Forked here, before libvirt's threads; only an embedded root of our own needs it.
    std::optional<Reaper> reaper;
    if (spec.libvirt_uri.empty()) reaper.emplace(tmp.dir, lc.name);
    std::optional<Child> device;
    {
        EventLoop loop(spec.out_dir / "libvirt.log");
        Session s;
        s.conn = lv().virConnectOpen(uri.c_str());
        if (!s.conn) {
            libvirt_failed(fmt::format("cannot connect to libvirt at {}: {}", uri, last_error()));
            return finish(nullptr);
        }
        s.callback = lv().virConnectDomainEventRegisterAny(s.conn, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                      VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), &lc, nullptr);
        if (s.callback < 0) {
            libvirt_failed(fmt::format("libvirt at {} does not deliver lifecycle events: {}", uri, last_error()));
            return finish(nullptr);
        }

        device = detail::start_device(spec, tmp.socket(), res);
        if (!device) return finish(nullptr);

        const std::string xml = domain_xml(spec, lc.name, tmp.socket(), emulator);
        std::ofstream(spec.out_dir / "domain.xml") << xml;
        // Autodestroy: should this process die, the connection's end takes
        // the domain along (the daemon's side of PR_SET_PDEATHSIG). The
        // embedded driver does not support it, and dies with us anyway
        // only in part: see docs/architecture.md, Launchers.
        s.dom = lv().virDomainCreateXML(s.conn, xml.c_str(), root.empty() ? VIR_DOMAIN_START_AUTODESTROY : 0);
        if (!s.dom) {
            libvirt_failed(fmt::format("libvirt at {} did not start the domain: {}", uri, last_error()));
        } else {
            if (reaper) reaper->watch(embedded_qemu_pid(root, lc.name));
            const auto deadline = Clock::now() + std::chrono::seconds(spec.timeout_s);
            auto next_state_check = Clock::now() + std::chrono::seconds(1);
            for (;;) {
                pollfd p[3] = {{sig_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}, {watch.fd(), POLLIN, 0}};
                const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
                ::poll(p, 3, static_cast<int>(std::clamp<long long>(left, 0, 500)));
                if (p[2].revents) watch.update();
                int sig = 0;
                signalfd_siginfo si{};
                while (::read(sig_fd, &si, sizeof si) == sizeof si)
                    if (si.ssi_signo != SIGCHLD) sig = static_cast<int>(si.ssi_signo);
                uint64_t n;
                [[maybe_unused]] auto r = ::read(wake_fd, &n, sizeof n);
                if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || interrupted_by()) {
                    note_interrupt(sig);
                    sig = interrupted_by();
                    res.outcome = BootOutcome::interrupted;
                    res.message = fmt::format("interrupted by signal {}", sig);
                    break;
                }
                bool stopped;
                int detail_code;
                {
                    std::lock_guard g(lc.m);
                    stopped = lc.stopped;
                    detail_code = lc.stop_detail;
                }
                // Events can be lost with a remote daemon's connection: the
                // domain's state is asked for too, now and then.
                if (!stopped && Clock::now() >= next_state_check) {
                    next_state_check = Clock::now() + std::chrono::seconds(1);
                    int state = 0, reason = 0;
                    const bool gone = lv().virDomainGetState(s.dom, &state, &reason, 0) < 0;
                    if (gone || state == VIR_DOMAIN_SHUTOFF) {
                        // The STOPPED event is usually on its way (a transient domain is
                        // gone from the list first): give it 2 s, else take the state's reason.
                        const auto wait_until = Clock::now() + std::chrono::seconds(2);
                        for (;;) {
                            {
                                std::lock_guard g(lc.m);
                                if (lc.stopped) {
                                    detail_code = lc.stop_detail;
                                    break;
                                }
                            }
                            if (Clock::now() >= wait_until) {
                                std::lock_guard g(lc.m);
                                lc.stopped = true;
                                lc.stopped_s = std::chrono::duration<double>(Clock::now() - t0).count();
                                lc.stop_detail = gone ? -1
                                                 : reason == VIR_DOMAIN_SHUTOFF_SHUTDOWN  ? VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN
                                                 : reason == VIR_DOMAIN_SHUTOFF_DESTROYED ? VIR_DOMAIN_EVENT_STOPPED_DESTROYED
                                                 : reason == VIR_DOMAIN_SHUTOFF_CRASHED   ? VIR_DOMAIN_EVENT_STOPPED_CRASHED
                                                 : reason == VIR_DOMAIN_SHUTOFF_FAILED    ? VIR_DOMAIN_EVENT_STOPPED_FAILED
                                                                                          : -1;
                                detail_code = lc.stop_detail;
                                fields["stop_seen_by"] = "state";
                                break;
                            }
                            std::this_thread::sleep_for(std::chrono::milliseconds(20));
                        }
                        stopped = true;
                    }
                }
                if (stopped) {
                    s.gone = true;
                    const std::string tail = tail_lines(console.string(), 20);
                    if (detail_code == VIR_DOMAIN_EVENT_STOPPED_FAILED) {
                        res.outcome = BootOutcome::qemu_failed;
                        res.message = fmt::format("QEMU failed under libvirt at {}; console.log:\n{}", uri, tail);
                    } else if (detail_code == VIR_DOMAIN_EVENT_STOPPED_CRASHED || detail::console_has(console, detail::kPanicText)) {
                        res.outcome = BootOutcome::guest_panic;
                        res.message = fmt::format("the guest kernel panicked; console.log:\n{}", tail);
                    } else if (detail_code == VIR_DOMAIN_EVENT_STOPPED_DESTROYED) {
                        res.outcome = BootOutcome::qemu_failed;
                        res.message = fmt::format("the domain was destroyed by someone else at {}; console.log:\n{}", uri, tail);
                    }
                    break;
                }
                if (device->poll()) {
                    res.outcome = BootOutcome::device_failed;
                    res.message = fmt::format("blkrig-device {} while the guest ran; device.log:\n{}", device->describe_exit(),
                                              tail_lines(device_log.string(), 20));
                    break;
                }
                if (Clock::now() >= deadline) {
                    res.outcome = BootOutcome::timeout;
                    res.message = fmt::format("the guest did not power off within {} s; console.log:\n{}", spec.timeout_s,
                                              tail_lines(console.string(), 20));
                    break;
                }
            }
            s.destroy();
            fields["destroyed"] = s.destroyed_by_us;  // timeout, interruption, a device that died
        }
        // QEMU's own messages, when its log is on this host.
        const fs::path qemu_log = !root.empty() ? root / "log" / "qemu" / (lc.name + ".log")
                                                : fs::path("/var/log/libvirt/qemu") / (lc.name + ".log");
        const bool local = uri.find(":///") != std::string::npos;  // no host part
        std::error_code ec;
        if (local && fs::is_regular_file(qemu_log, ec)) fs::copy_file(qemu_log, spec.out_dir / "qemu.log", fs::copy_options::overwrite_existing, ec);
        if (res.outcome == BootOutcome::qemu_failed || res.outcome == BootOutcome::libvirt_failed) {
            const std::string qtail = tail_lines((spec.out_dir / "qemu.log").string(), 10);
            if (!qtail.empty()) res.message += fmt::format("\nqemu.log:\n{}", qtail);
        }
    }
    return finish(&*device);
}

}  // namespace blkrig::launch
