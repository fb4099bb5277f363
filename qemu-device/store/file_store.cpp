#include "store/store.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <vector>

namespace blkrig::store {

namespace {

constexpr size_t kDirectAlign = 4096;

bool aligned(std::span<const iovec> iov, uint64_t offset) {
    if (offset % kDirectAlign) return false;
    for (const auto& v : iov)
        if (reinterpret_cast<uintptr_t>(v.iov_base) % kDirectAlign || v.iov_len % kDirectAlign) return false;
    return true;
}

size_t total(std::span<const iovec> iov) {
    size_t n = 0;
    for (const auto& v : iov) n += v.iov_len;
    return n;
}

class FileStore;

// One queue's io_uring: a ring of depth entries whose completions signal an
// eventfd. Each request keeps its iovec array (and what a short transfer
// needs to finish) in a slot until it is reaped.
class UringQueue final : public AsyncQueue {
public:
    UringQueue(FileStore& store, unsigned depth);
    ~UringQueue() override;
    bool init(std::string* why);
    int fd() const override { return event_fd_; }
    bool read(uint64_t offset, std::span<const iovec> iov, uint64_t tag) override { return queue(Op::read, offset, iov, tag); }
    bool write(uint64_t offset, std::span<const iovec> iov, uint64_t tag) override;
    bool flush(uint64_t tag) override { return queue(Op::flush, 0, {}, tag); }
    size_t try_cached(bool write, uint64_t offset, std::span<const iovec> iov) override;
    void submit() override;
    void reap(const std::function<void(uint64_t, int)>& done, bool wait) override;
    size_t in_flight() const override { return in_flight_; }
    bool ready() const override { return ring_ok_ && io_uring_cq_ready(&ring_) > 0; }

private:
    enum class Op : uint8_t { read, write, flush };
    struct Slot {
        Op op = Op::read;
        uint64_t tag = 0;
        uint64_t offset = 0;
        std::vector<iovec> iov;
    };
    bool queue(Op op, uint64_t offset, std::span<const iovec> iov, uint64_t tag);
    int finish(Slot& s, int res);

    FileStore& store_;
    unsigned depth_;
    io_uring ring_{};
    bool ring_ok_ = false;
    int event_fd_ = -1;
    std::vector<Slot> slots_;
    std::vector<uint32_t> free_;
    size_t in_flight_ = 0;
    unsigned queued_ = 0;  // prepared, not yet submitted
    // Whether RWF_NOWAIT is worth trying (cleared for good on EOPNOTSUPP).
    bool nowait_read_ = true;
    bool nowait_write_ = true;
};

class FileStore final : public Store {
    friend class UringQueue;

public:
    FileStore(int fd, std::string path, uint64_t size, bool direct)
        : fd_(fd), path_(std::move(path)), size_(size), direct_(direct) {}
    ~FileStore() override { ::close(fd_); }

    uint64_t size() const override { return size_; }
    std::string sync_is_better() const override { return sync_is_better_; }
    void set_sync_is_better(std::string why) { sync_is_better_ = std::move(why); }

    int read(uint64_t offset, std::span<const iovec> iov) override {
        if (direct_ && !aligned(iov, offset)) return bounce(offset, iov, false);
        return loop(offset, iov, false);
    }
    int write(uint64_t offset, std::span<const iovec> iov) override {
        if (direct_ && !aligned(iov, offset)) return bounce(offset, iov, true);
        return loop(offset, iov, true);
    }
    int flush() override { return ::fdatasync(fd_) == 0 ? 0 : -errno; }

    int discard(uint64_t offset, uint64_t len) override {
        if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(len)) == 0)
            return 0;
        return zero_by_writing(offset, len);  // discard may zero; it must not fail for lack of hole punching
    }
    int write_zeroes(uint64_t offset, uint64_t len) override {
        if (::fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(len)) == 0)
            return 0;
        if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(len)) == 0)
            return 0;
        return zero_by_writing(offset, len);
    }
    std::string describe() const override { return fmt::format("file {}{}", path_, direct_ ? " (O_DIRECT)" : ""); }
    std::unique_ptr<AsyncQueue> async_queue(unsigned depth, std::string* why) override {
        auto q = std::make_unique<UringQueue>(*this, std::max(depth, 1u));
        if (!q->init(why)) return nullptr;
        return q;
    }

private:
    std::string sync_is_better_;
    // preadv/pwritev may transfer less than asked; continue until done.
    int loop(uint64_t offset, std::span<const iovec> iov_in, bool write) {
        std::vector<iovec> iov(iov_in.begin(), iov_in.end());
        size_t first = 0;
        while (first < iov.size()) {
            const int n = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
            const ssize_t r = write ? ::pwritev(fd_, iov.data() + first, n, static_cast<off_t>(offset))
                                    : ::preadv(fd_, iov.data() + first, n, static_cast<off_t>(offset));
            if (r < 0) {
                if (errno == EINTR) continue;
                return -errno;
            }
            if (r == 0) {
                if (write) return -EIO;
                // Past the end of a file shorter than the capacity: zeros.
                for (size_t i = first; i < iov.size(); ++i) std::memset(iov[i].iov_base, 0, iov[i].iov_len);
                return 0;
            }
            offset += static_cast<uint64_t>(r);
            size_t done = static_cast<size_t>(r);
            while (first < iov.size() && done >= iov[first].iov_len) done -= iov[first++].iov_len;
            if (first < iov.size()) {
                iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + done;
                iov[first].iov_len -= done;
            }
        }
        return 0;
    }

    int bounce(uint64_t offset, std::span<const iovec> iov, bool write) {
        // A bounced write rewrites whole 4 KiB blocks: two queues writing
        // different sectors of one block must not interleave their
        // read-modify-write cycles, or one write is lost.
        std::unique_lock lock(bounce_mu_, std::defer_lock);
        if (write) lock.lock();
        const uint64_t start = offset / kDirectAlign * kDirectAlign;
        const uint64_t end = (offset + total(iov) + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
        const size_t len = end - start;
        void* raw = std::aligned_alloc(kDirectAlign, len);
        if (raw == nullptr) return -ENOMEM;
        std::unique_ptr<void, decltype(&std::free)> buf(raw, &std::free);
        auto* p = static_cast<uint8_t*>(raw);
        const iovec whole{p, len};
        // A write of a partial block is read-modify-write; a read needs the whole span anyway.
        if (!write || start != offset || end != offset + total(iov)) {
            if (int r = loop(start, std::span(&whole, 1), false); r < 0) return r;
        }
        uint8_t* cur = p + (offset - start);
        for (const auto& v : iov) {
            if (write) std::memcpy(cur, v.iov_base, v.iov_len);
            else std::memcpy(v.iov_base, cur, v.iov_len);
            cur += v.iov_len;
        }
        if (!write) return 0;
        if (int r = loop(start, std::span(&whole, 1), true); r < 0) return r;
        // The rounded-up block may reach past the end of an image whose size
        // is not a multiple of 4 KiB; cut the file back so it does not grow.
        if (end > size_ && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0) return -errno;
        return 0;
    }

    int zero_by_writing(uint64_t offset, uint64_t len) {
        static const std::vector<uint8_t> zeros(1 << 20, 0);
        while (len > 0) {
            const size_t n = std::min<uint64_t>(len, zeros.size());
            const iovec v{const_cast<uint8_t*>(zeros.data()), n};
            if (int r = write(offset, std::span(&v, 1)); r < 0) return r;
            offset += n;
            len -= n;
        }
        return 0;
    }

    int fd_;
    std::mutex bounce_mu_;
    std::string path_;
    uint64_t size_;
    bool direct_;
};

UringQueue::UringQueue(FileStore& store, unsigned depth) : store_(store), depth_(depth), slots_(depth) {
    free_.reserve(depth);
    for (uint32_t i = depth; i-- > 0;) free_.push_back(i);
}

bool UringQueue::init(std::string* why) {
    const int r = io_uring_queue_init(depth_, &ring_, 0);
    if (r < 0) {
        if (why) *why = fmt::format("io_uring_queue_init({}): {}", depth_, std::strerror(-r));
        return false;
    }
    ring_ok_ = true;
    event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (event_fd_ < 0) {
        if (why) *why = fmt::format("eventfd: {}", std::strerror(errno));
        return false;
    }
    // Every completion signals. The "async" registration signals only those
    // an io-wq worker posts: an O_DIRECT transfer or a page-cache miss the
    // kernel finishes in this thread's task work never woke the queue, which
    // slept until the next kick (unit_store: UringWakesItsFdForEveryCompletion).
    // Page-cache hits no longer come here (try_cached), so the wake-ups it
    // saved are gone anyway.
    if (const int e = io_uring_register_eventfd(&ring_, event_fd_); e < 0) {
        if (why) *why = fmt::format("io_uring_register_eventfd: {}", std::strerror(-e));
        return false;
    }
    return true;
}

UringQueue::~UringQueue() {
    if (ring_ok_) {
        // Nothing may write into a buffer after its queue is gone.
        if (in_flight_) reap([](uint64_t, int) {}, true);
        io_uring_queue_exit(&ring_);
    }
    if (event_fd_ >= 0) ::close(event_fd_);
}

// Without O_DIRECT most transfers are page-cache copies that io_uring would
// finish inside the submit call anyway, after a request's set-up, a
// completion and a trip through the queue's reap: the caller tries them
// first with RWF_NOWAIT, which copies what is cached and never blocks.
size_t UringQueue::try_cached(bool write, uint64_t offset, std::span<const iovec> iov) {
    if (store_.direct_ || iov.empty() || iov.size() > IOV_MAX) return 0;
    bool& ok = write ? nowait_write_ : nowait_read_;
    if (!ok) return 0;
    const int n = static_cast<int>(iov.size());
    const ssize_t r = write ? ::pwritev2(store_.fd_, iov.data(), n, static_cast<off_t>(offset), RWF_NOWAIT)
                            : ::preadv2(store_.fd_, iov.data(), n, static_cast<off_t>(offset), RWF_NOWAIT);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno == EOPNOTSUPP || errno == EINVAL) ok = false;  // this file system or kernel has no such mode
    return 0;
}

// A buffered write where the file system has no RWF_NOWAIT for writes
// (ext4 here: try_cached found out) goes from io_uring to a kernel worker
// thread: a thread switch for a page-cache copy, about 0.6 of the
// synchronous write's IOPS (bench/run). The caller writes it itself.
bool UringQueue::write(uint64_t offset, std::span<const iovec> iov, uint64_t tag) {
    if (!store_.direct_ && !nowait_write_) return false;
    return queue(Op::write, offset, iov, tag);
}

bool UringQueue::queue(Op op, uint64_t offset, std::span<const iovec> iov, uint64_t tag) {
    if (free_.empty() || iov.size() > IOV_MAX) return false;
    if (store_.direct_ && op != Op::flush && !aligned(iov, offset)) return false;  // the bounce buffer is synchronous
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
        submit();
        sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) return false;
    }
    const uint32_t i = free_.back();
    free_.pop_back();
    Slot& s = slots_[i];
    s.op = op;
    s.tag = tag;
    s.offset = offset;
    s.iov.assign(iov.begin(), iov.end());
    const auto n = static_cast<unsigned>(s.iov.size());
    switch (op) {
    case Op::read: io_uring_prep_readv(sqe, store_.fd_, s.iov.data(), n, offset); break;
    case Op::write: io_uring_prep_writev(sqe, store_.fd_, s.iov.data(), n, offset); break;
    case Op::flush: io_uring_prep_fsync(sqe, store_.fd_, IORING_FSYNC_DATASYNC); break;
    }
    io_uring_sqe_set_data64(sqe, i);
    ++in_flight_;
    ++queued_;
    return true;
}

void UringQueue::submit() {
    if (queued_ == 0) return;
    for (;;) {
        const int r = io_uring_submit(&ring_);
        if (r >= 0 || (r != -EINTR && r != -EAGAIN)) break;
    }
    queued_ = 0;
}

// A short transfer (a file shorter than the capacity, a signal) is finished
// by the synchronous path from where the kernel stopped.
int UringQueue::finish(Slot& s, int res) {
    if (res < 0 || s.op == Op::flush) return res < 0 ? res : 0;
    size_t done = static_cast<size_t>(res), total_len = total(s.iov);
    if (done >= total_len) return 0;
    std::vector<iovec> rest;
    for (const auto& v : s.iov) {
        if (done >= v.iov_len) {
            done -= v.iov_len;
            continue;
        }
        rest.push_back({static_cast<uint8_t*>(v.iov_base) + done, v.iov_len - done});
        done = 0;
    }
    const uint64_t at = s.offset + static_cast<uint64_t>(res);
    return s.op == Op::read ? store_.read(at, rest) : store_.write(at, rest);
}

void UringQueue::reap(const std::function<void(uint64_t, int)>& done, bool wait) {
    uint64_t v;
    [[maybe_unused]] auto n = ::read(event_fd_, &v, sizeof v);
    submit();
    while (in_flight_) {
        io_uring_cqe* cqe = nullptr;
        const int r = wait ? io_uring_wait_cqe(&ring_, &cqe) : io_uring_peek_cqe(&ring_, &cqe);
        if (r == -EINTR) continue;
        if (r < 0 || cqe == nullptr) break;
        const auto i = static_cast<uint32_t>(io_uring_cqe_get_data64(cqe));
        const int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        Slot& s = slots_[i];
        const int result = finish(s, res);
        const uint64_t tag = s.tag;
        s.iov.clear();
        free_.push_back(i);
        --in_flight_;
        done(tag, result);
    }
}

}  // namespace

std::unique_ptr<Store> open_file(const std::string& path, bool read_only, bool direct) {
    int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (direct) flags |= O_DIRECT;
    const int fd = ::open(path.c_str(), flags);
    if (fd < 0) throw StoreError(fmt::format("cannot open image {}: {}", path, std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int e = errno;
        ::close(fd);
        throw StoreError(fmt::format("cannot stat image {}: {}", path, std::strerror(e)));
    }
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (S_ISBLK(st.st_mode) && ::ioctl(fd, BLKGETSIZE64, &size) != 0) {
        const int e = errno;
        ::close(fd);
        throw StoreError(fmt::format("cannot get size of block device {}: {}", path, std::strerror(e)));
    } else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        ::close(fd);
        throw StoreError(fmt::format("image {} is neither a regular file nor a block device", path));
    }
    auto s = std::make_unique<FileStore>(fd, path, size, direct);
    // tmpfs refuses RWF_NOWAIT and io_uring gives each of its transfers to a
    // kernel worker thread: a wake-up and a thread switch for a memory copy
    // (bench/trace-cost, depth 32: a third of the synchronous path's IOPS).
    struct statfs sf {};
    if (S_ISREG(st.st_mode) && ::fstatfs(fd, &sf) == 0 && (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC))
        s->set_sync_is_better(fmt::format("{} is in memory ({}): a transfer is a copy, done at once", path,
                                          sf.f_type == TMPFS_MAGIC ? "tmpfs" : "ramfs"));
    return s;
}

}  // namespace blkrig::store
