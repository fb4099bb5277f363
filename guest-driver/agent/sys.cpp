#include "sys.hpp"

#include "agent_core/result.hpp"

#include <fcntl.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <new>

namespace blkrig::agent {

SysError::SysError(const std::string& call, const std::string& target, int err)
    : std::runtime_error(call + " " + target + ": " + errno_name(err)), err_(err) {}

std::string read_text(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) throw SysError("open", path, errno);
    std::string out;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw SysError("read", path, errno);
        if (n == 0) return out;
        out.append(buf, static_cast<size_t>(n));
    }
}

void write_text(const std::string& path, std::string_view text) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) throw SysError("open", path, errno);
    ssize_t n;
    do n = ::write(fd.get(), text.data(), text.size());
    while (n < 0 && errno == EINTR);
    if (n < 0) throw SysError("write '" + std::string(text) + "' to", path, errno);
}

std::string trim(std::string_view s) {
    const auto b = s.find_first_not_of(" \t\n");
    if (b == std::string_view::npos) return {};
    const auto e = s.find_last_not_of(" \t\n");
    return std::string(s.substr(b, e - b + 1));
}

int64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

namespace {

void console(std::string line) {
    line += '\n';
    // Best effort: nothing is left to tell if the console itself fails.
    [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace

namespace {

// Seconds since boot, like the kernel's own console lines.
std::string stamp() {
    char buf[32];
    std::snprintf(buf, sizeof buf, "[%.3f] ", static_cast<double>(monotonic_ns()) / 1e9);
    return buf;
}

}  // namespace

void say(std::string_view msg) { console("blkrig-agent: " + stamp() + std::string(msg)); }

void say_error(std::string_view msg) { console("BLKRIG-AGENT error: " + stamp() + std::string(msg)); }

AlignedBuffer::AlignedBuffer(size_t size) : size_(size) {
    void* p = nullptr;
    // 4096 covers every logical block size a virtio-blk disk can have.
    if (::posix_memalign(&p, 4096, size ? size : 1) != 0) throw std::bad_alloc();
    p_ = static_cast<uint8_t*>(p);
}

AlignedBuffer::~AlignedBuffer() { std::free(p_); }

namespace {
const char* const kRcuExpedited = "/sys/kernel/rcu_expedited";
}

ExpeditedRcu::ExpeditedRcu() {
    try {
        before_ = trim(read_text(kRcuExpedited));
        if (before_ == "1") return;  // already expedited: nothing to undo
        write_text(kRcuExpedited, "1");
        changed_ = true;
    } catch (const SysError&) {
    }
}

std::string ExpeditedRcu::restore() {
    if (changed_) {
        changed_ = false;
        try {
            write_text(kRcuExpedited, before_);
        } catch (const SysError& e) {
            say_error(std::string("could not restore ") + kRcuExpedited + ": " + e.what());
        }
    }
    try {
        return trim(read_text(kRcuExpedited));
    } catch (const SysError&) {
        return "";
    }
}

}  // namespace blkrig::agent
