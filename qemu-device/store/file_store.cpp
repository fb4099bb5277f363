#include "store/store.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
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

class FileStore final : public Store {
public:
    FileStore(int fd, std::string path, uint64_t size, bool direct)
        : fd_(fd), path_(std::move(path)), size_(size), direct_(direct) {}
    ~FileStore() override { ::close(fd_); }

    uint64_t size() const override { return size_; }

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

private:
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
    return std::make_unique<FileStore>(fd, path, size, direct);
}

}  // namespace blkrig::store
