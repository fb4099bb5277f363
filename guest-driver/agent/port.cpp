#include "port.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <thread>

namespace blkrig::agent {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

void Port::write(std::string_view data) {
    auto last_progress = Clock::now();
    while (!data.empty()) {
        const ssize_t n = ::write(fd_.get(), data.data(), data.size());
        if (n > 0) {
            data.remove_prefix(static_cast<size_t>(n));
            last_progress = Clock::now();
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) throw SysError("write", "/dev/" + name_, errno);
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(last_progress + kStallLimit - Clock::now());
        if (left.count() <= 0) throw SysError("write (no progress for 30 s)", "port " + name_, ETIMEDOUT);
        pollfd p{fd_.get(), POLLOUT, 0};
        ::poll(&p, 1, static_cast<int>(left.count()));
    }
}

namespace {

// /dev/vportNpM for a port; made from its dev attribute if devtmpfs has not
// created the node.
UniqueFd open_port_node(const fs::path& sys_dir) {
    const std::string node = "/dev/" + sys_dir.filename().string();
    struct stat st {};
    if (::stat(node.c_str(), &st) != 0) {
        const std::string dev = trim(read_text(sys_dir / "dev"));
        unsigned maj = 0, min = 0;
        if (std::sscanf(dev.c_str(), "%u:%u", &maj, &min) != 2)
            throw Fatal("bad dev attribute '" + dev + "' in " + sys_dir.string());
        if (::mknod(node.c_str(), S_IFCHR | 0600, makedev(maj, min)) != 0 && errno != EEXIST)
            throw SysError("mknod", node, errno);
    }
    // Non-blocking, so Port::write can bound how long it waits.
    UniqueFd fd(::open(node.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fd.valid()) throw SysError("open", node, errno);
    return fd;
}

}  // namespace

Ports open_ports(std::chrono::milliseconds wait) {
    const fs::path root = "/sys/class/virtio-ports";
    auto deadline = Clock::now() + wait;
    bool results_seen = false;
    Ports ports;
    for (;;) {
        ports.seen.clear();
        fs::path results, events;
        std::error_code ec;
        for (const auto& entry : fs::directory_iterator(root, ec)) {
            std::string name;
            try {
                name = trim(read_text(entry.path() / "name"));
            } catch (const SysError&) {
                continue;  // the port is still being set up
            }
            ports.seen.push_back(name.empty() ? entry.path().filename().string() : name);
            if (name == kResultsPort) results = entry.path();
            if (name == kEventsPort) events = entry.path();
        }
        // QEMU announces its ports together: once the results port is there,
        // the events port is either close behind or not coming.
        if (!results.empty() && !results_seen) {
            results_seen = true;
            deadline = std::min(deadline, Clock::now() + kEventsGrace);
        }
        if ((!results.empty() && !events.empty()) || Clock::now() > deadline) {
            if (results.empty()) {
                std::string seen;
                for (const auto& s : ports.seen) seen += (seen.empty() ? "" : ", ") + s;
                throw Fatal(std::string("no virtio-serial port named ") + kResultsPort + " within " +
                            std::to_string(wait.count()) + " ms (ports: " + (seen.empty() ? "none" : seen) +
                            "; is virtio_console in load-order and the port on the QEMU line?)");
            }
            ports.results = Port(open_port_node(results), kResultsPort);
            if (!events.empty()) ports.events = Port(open_port_node(events), kEventsPort);
            return ports;
        }
        // Short: the ports appear within milliseconds of virtio_console's
        // load, and each wait here is the run's (the guest's clock is QEMU's).
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

}  // namespace blkrig::agent
