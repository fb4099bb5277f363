#include "step_ops.hpp"

#include "agent_core/pattern.hpp"
#include "readback.hpp"
#include "agent_core/sha256.hpp"
#include "agent_core/xxh128.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

namespace blkrig::agent {

namespace {

// The digests of a step's bytes: XXH3-128 always, SHA-256 when the step's
// spec asks (it costs about ten times the guest time under TCG).
class Digests {
public:
    explicit Digests(const Step& s) : sha_(s.sha256) {}
    void update(const void* p, size_t n) {
        xxh_.update(p, n);
        if (sha_) sha256_.update(p, n);
    }
    void into(StepResult& r) {
        r.xxh128 = xxh_.hex();
        if (sha_) r.sha256 = sha256_.hex();
    }

private:
    bool sha_;
    Xxh128 xxh_;
    Sha256 sha256_;
};

// The descriptor a step works on: its named one, or `path` opened with
// `flags`. Invalid (with r failed) if neither is possible.
class Target {
public:
    Target(const Step& s, const NamedFds& fds, int flags, StepResult& r) {
        if (!s.fd.empty()) {
            const auto it = fds.find(s.fd);
            if (it == fds.end()) {
                r.fail_text("fd '" + s.fd + "' is not open (its open step failed)");
                return;
            }
            fd_ = it->second.get();
            return;
        }
        own_.reset(::open(s.path.c_str(), flags | O_CLOEXEC, 0644));
        if (!own_.valid()) r.fail("open", errno);
        fd_ = own_.get();
    }
    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }

private:
    UniqueFd own_;
    int fd_ = -1;
};

void do_read(const Step& s, const NamedFds& fds, StepResult& r) {
    Target t(s, fds, O_RDONLY | (s.direct ? O_DIRECT : 0), r);
    if (!t.valid()) return;
    AlignedBuffer buf(static_cast<size_t>(s.bs));
    Digests digests(s);
    uint64_t done = 0;
    for (;;) {
        size_t want = buf.size();
        if (s.length >= 0) want = static_cast<size_t>(std::min<uint64_t>(want, static_cast<uint64_t>(s.length) - done));
        if (want == 0) break;
        const ssize_t n = ::pread(t.get(), buf.data(), want, static_cast<off_t>(static_cast<uint64_t>(s.offset) + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            r.fail("pread", errno);
            break;
        }
        if (n == 0) break;
        digests.update(buf.data(), static_cast<size_t>(n));
        done += static_cast<uint64_t>(n);
    }
    // What was read before an error counts too: it shows where reading stopped.
    r.bytes = done;
    digests.into(r);
}

void do_write(const Step& s, const NamedFds& fds, StepResult& r) {
    const int flags = O_WRONLY | (s.create ? O_CREAT : 0) | (s.append ? O_APPEND : 0) | (s.direct ? O_DIRECT : 0);
    Target t(s, fds, flags, r);
    if (!t.valid()) return;
    AlignedBuffer buf(static_cast<size_t>(s.bs));
    pattern::Stream stream(s.pattern, s.seed);
    Digests digests(s);
    const auto length = static_cast<uint64_t>(s.length);
    uint64_t done = 0;
    while (done < length && r.ret == 0) {
        const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), length - done));
        stream.fill(buf.data(), want);
        size_t pos = 0;
        while (pos < want) {
            const ssize_t n = s.append ? ::write(t.get(), buf.data() + pos, want - pos)
                                       : ::pwrite(t.get(), buf.data() + pos, want - pos,
                                                  static_cast<off_t>(static_cast<uint64_t>(s.offset) + done));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                r.fail(s.append ? "write" : "pwrite", errno);
                break;
            }
            digests.update(buf.data() + pos, static_cast<size_t>(n));
            pos += static_cast<size_t>(n);
            done += static_cast<uint64_t>(n);
        }
    }
    r.bytes = done;
    digests.into(r);
}

void do_sync_file(const Step& s, const NamedFds& fds, StepResult& r) {
    Target t(s, fds, O_RDONLY, r);
    if (!t.valid()) return;
    const bool data_only = s.op == Op::fdatasync;
    if ((data_only ? ::fdatasync(t.get()) : ::fsync(t.get())) != 0) r.fail(data_only ? "fdatasync" : "fsync", errno);
}

void do_mmap_write(const Step& s, StepResult& r) {
    UniqueFd fd(::open(s.path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) return r.fail("open", errno);
    const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const auto offset = static_cast<uint64_t>(s.offset), length = static_cast<uint64_t>(s.length);
    const uint64_t start = offset / page * page;
    const size_t map_len = static_cast<size_t>(offset + length - start);
    void* map = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), static_cast<off_t>(start));
    if (map == MAP_FAILED) return r.fail("mmap", errno);
    // Past the page that holds EOF this raises SIGBUS; the step then reports it.
    uint8_t* dst = static_cast<uint8_t*>(map) + (offset - start);
    pattern::Stream(s.pattern, s.seed).fill(dst, static_cast<size_t>(length));
    Digests digests(s);
    digests.update(dst, static_cast<size_t>(length));
    r.bytes = length;
    digests.into(r);
    if (::msync(map, map_len, MS_SYNC) != 0) r.fail("msync", errno);
    ::munmap(map, map_len);
}

void do_sleep(int64_t ms) {
    timespec left{static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1'000'000};
    while (::nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

int do_open(const Step& s, StepResult& r) {
    const int access = s.access == Access::read ? O_RDONLY : s.access == Access::write ? O_WRONLY : O_RDWR;
    const int flags = access | (s.create ? O_CREAT : 0) | (s.append ? O_APPEND : 0) | (s.direct ? O_DIRECT : 0);
    const int fd = ::open(s.path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd < 0) r.fail("open", errno);
    return fd;
}

}  // namespace

int run_op(const Step& s, const RunSpec& spec, const NamedFds& fds, StepResult& r) {
    switch (s.op) {
    case Op::mount:
        if (::mkdir(spec.mountpoint.c_str(), 0755) != 0 && errno != EEXIST) {
            r.fail("mkdir", errno);
            break;
        }
        if (::mount(spec.disk.c_str(), spec.mountpoint.c_str(), spec.fstype.c_str(), spec.mount.flags,
                    spec.mount.data.empty() ? nullptr : spec.mount.data.c_str()) != 0)
            r.fail("mount", errno);
        else
            r.mount_options = mount_options_of(spec.mountpoint);
        break;
    case Op::umount:
        if (::umount2(spec.mountpoint.c_str(), 0) != 0) r.fail("umount", errno);
        break;
    case Op::read:
        do_read(s, fds, r);
        break;
    case Op::write:
        do_write(s, fds, r);
        break;
    case Op::fsync:
    case Op::fdatasync:
        do_sync_file(s, fds, r);
        break;
    case Op::sync:
        ::sync();
        break;
    case Op::drop_caches:
        try {
            write_text("/proc/sys/vm/drop_caches", std::to_string(s.value));
        } catch (const SysError& e) {
            r.fail("write /proc/sys/vm/drop_caches", e.err());
        }
        break;
    case Op::truncate:
        if (::truncate(s.path.c_str(), static_cast<off_t>(s.size)) != 0) r.fail("truncate", errno);
        break;
    case Op::mmap_write:
        do_mmap_write(s, r);
        break;
    case Op::fiemap:
        map_extents(s.path, r);
        break;
    case Op::rename:
        if (::rename(s.path.c_str(), s.to.c_str()) != 0) r.fail("rename", errno);
        break;
    case Op::sleep:
        do_sleep(s.ms);
        break;
    case Op::open:
        return do_open(s, r);
    case Op::close: {
        const auto it = fds.find(s.fd);
        if (it == fds.end()) {
            r.fail_text("fd '" + s.fd + "' is not open (its open step failed)");
        } else if (::close(it->second.get()) != 0) {
            r.fail("close", errno);
        }
        break;
    }
    }
    return -1;
}

}  // namespace blkrig::agent
