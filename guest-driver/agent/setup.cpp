#include "setup.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#include <linux/module.h>

#include <cerrno>
#include <filesystem>
#include <thread>

namespace blkrig::agent {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

void mount_one(const char* source, const char* target, const char* type) {
    if (::mkdir(target, 0755) != 0 && errno != EEXIST) throw SysError("mkdir", target, errno);
    // EBUSY: the kernel (or an earlier init) mounted it already.
    if (::mount(source, target, type, MS_NOSUID | MS_NOEXEC, nullptr) != 0 && errno != EBUSY)
        throw SysError(std::string("mount -t ") + type + " on", target, errno);
}

// PID 1 gets /dev/console as fds 0-2 only if the initramfs has the node;
// devtmpfs always has it.
void ensure_console() {
    if (::fcntl(STDERR_FILENO, F_GETFD) != -1) return;
    const int fd = ::open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0) return;
    for (int i = 0; i < 3; ++i)
        if (fd != i) ::dup2(fd, i);
    if (fd > 2) ::close(fd);
}

std::string list_dir(const char* dir) {
    std::string out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) out += (out.empty() ? "" : " ") + e.path().filename().string();
    return out.empty() ? "none" : out;
}

}  // namespace

void mount_filesystems(Reporter& rep) {
    mount_one("proc", "/proc", "proc");
    mount_one("sysfs", "/sys", "sysfs");
    // devtmpfs must allow device nodes: no MS_NODEV, and exec does not matter.
    if (::mkdir("/dev", 0755) != 0 && errno != EEXIST) throw SysError("mkdir", "/dev", errno);
    if (::mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, nullptr) != 0 && errno != EBUSY)
        throw SysError("mount -t devtmpfs on", "/dev", errno);
    ensure_console();
    try {
        mount_one("tracefs", "/sys/kernel/tracing", "tracefs");
    } catch (const SysError& e) {
        rep.note(std::string("tracing unavailable: ") + e.what());
    }
}

std::vector<std::string> load_modules(Reporter& rep) {
    const std::string order_file = "/lib/modules/load-order";
    std::string order;
    try {
        order = read_text(order_file);
    } catch (const SysError& e) {
        rep.note(std::string("no modules loaded: ") + e.what());
        return {};
    }
    std::vector<std::string> loaded;
    size_t pos = 0;
    while (pos < order.size()) {
        const size_t nl = order.find('\n', pos);
        const std::string name = trim(order.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
        pos = nl == std::string::npos ? order.size() : nl + 1;
        if (name.empty()) continue;
        UniqueFd fd;
        int flags = 0;
        std::string file;
        for (const char* ext : {".ko", ".ko.xz", ".ko.zst", ".ko.gz"}) {
            file = "/lib/modules/" + name + ext;
            fd.reset(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
            if (fd.valid()) {
                flags = std::string_view(ext) == ".ko" ? 0 : MODULE_INIT_COMPRESSED_FILE;
                break;
            }
        }
        if (!fd.valid()) {
            rep.note("module " + name + ": no /lib/modules/" + name + ".ko[.xz|.zst|.gz]");
            continue;
        }
        const long r = ::syscall(SYS_finit_module, fd.get(), "", flags);
        if (r != 0 && errno != EEXIST) {
            rep.note("module " + name + ": " + SysError("finit_module", file, errno).what());
            continue;
        }
        loaded.push_back(name);
    }
    say("modules loaded: " + std::to_string(loaded.size()));
    return loaded;
}

RunSpec read_run_spec(const std::string& path) {
    std::string text;
    try {
        text = read_text(path);
    } catch (const SysError& e) {
        throw Fatal(std::string("no run description: ") + e.what());
    }
    try {
        return parse_run_spec(text);
    } catch (const SpecError& e) {
        throw Fatal("run description " + path + ": " + e.what());
    }
}

UniqueFd wait_for_disk(const std::string& disk, std::chrono::milliseconds wait) {
    const auto deadline = Clock::now() + wait;
    for (;;) {
        UniqueFd fd(::open(disk.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
        if (fd.valid()) return fd;
        const int err = errno;
        if (err != ENOENT && err != ENXIO && err != ENODEV) throw SysError("open", disk, err);
        if (Clock::now() > deadline)
            throw Fatal("disk " + disk + " did not appear within " + std::to_string(wait.count()) +
                        " ms (block devices: " + list_dir("/sys/block") + "; is virtio_blk in load-order?)");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

std::vector<std::pair<std::string, std::string>> set_queue_knobs(const RunSpec& spec, Reporter& rep) {
    const std::string dir = "/sys/block/" + fs::path(spec.disk).filename().string() + "/queue/";
    for (const auto& [key, value] : spec.queue) {
        try {
            write_text(dir + key, value);
        } catch (const SysError& e) {
            rep.note(std::string("queue knob ") + key + ": " + e.what());
        }
    }
    std::vector<std::pair<std::string, std::string>> now;
    for (const auto& [key, value] : spec.queue) {
        try {
            now.emplace_back(key, trim(read_text(dir + key)));
        } catch (const SysError&) {
            now.emplace_back(key, "");
        }
    }
    return now;
}

std::string kernel_release() {
    utsname u{};
    ::uname(&u);
    return u.release;
}

}  // namespace blkrig::agent
