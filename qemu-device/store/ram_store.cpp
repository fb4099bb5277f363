#include "store/store.hpp"

#include <sys/mman.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace blkrig::store {

namespace {

// Copies between a flat byte range and an iovec list.
void copy_out(const uint8_t* src, std::span<const iovec> iov) {
    for (const auto& v : iov) {
        std::memcpy(v.iov_base, src, v.iov_len);
        src += v.iov_len;
    }
}
void copy_in(uint8_t* dst, std::span<const iovec> iov) {
    for (const auto& v : iov) {
        std::memcpy(dst, v.iov_base, v.iov_len);
        dst += v.iov_len;
    }
}
size_t total(std::span<const iovec> iov) {
    size_t n = 0;
    for (const auto& v : iov) n += v.iov_len;
    return n;
}

class RamStore final : public Store {
public:
    explicit RamStore(uint64_t size) : size_(size) {
        // Anonymous mapping: pages are zero and cost nothing until written.
        void* p = ::mmap(nullptr, size ? size : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) throw StoreError(fmt::format("cannot allocate {} bytes of RAM store: {}", size, std::strerror(errno)));
        mem_ = static_cast<uint8_t*>(p);
    }
    ~RamStore() override { ::munmap(mem_, size_ ? size_ : 1); }
    uint64_t size() const override { return size_; }
    int read(uint64_t off, std::span<const iovec> iov) override {
        copy_out(mem_ + off, iov);
        return 0;
    }
    int write(uint64_t off, std::span<const iovec> iov) override {
        copy_in(mem_ + off, iov);
        return 0;
    }
    int flush() override { return 0; }
    int discard(uint64_t off, uint64_t len) override { return write_zeroes(off, len); }
    int write_zeroes(uint64_t off, uint64_t len) override {
        std::memset(mem_ + off, 0, len);
        return 0;
    }
    std::string describe() const override { return fmt::format("ram {} bytes", size_); }

private:
    uint64_t size_;
    uint8_t* mem_ = nullptr;
};

// Copy-on-write at 4 KiB granularity over a read-only base.
class OverlayStore final : public Store {
public:
    explicit OverlayStore(std::unique_ptr<Store> base) : base_(std::move(base)) {}
    uint64_t size() const override { return base_->size(); }

    int read(uint64_t off, std::span<const iovec> iov) override {
        if (int r = base_->read(off, iov); r < 0) return r;
        const size_t len = total(iov);
        std::lock_guard lock(mu_);
        if (chunks_.empty()) return 0;
        std::vector<uint8_t> flat(len);
        bool touched = false;
        for_each_chunk(off, len, [&](uint64_t idx, size_t in_chunk, size_t pos, size_t n) {
            auto it = chunks_.find(idx);
            if (it == chunks_.end()) return;
            if (!touched) {
                copy_in(flat.data(), iov);  // what the base gave us
                touched = true;
            }
            std::memcpy(flat.data() + pos, it->second.data() + in_chunk, n);
        });
        if (touched) copy_out(flat.data(), iov);
        return 0;
    }

    int write(uint64_t off, std::span<const iovec> iov) override {
        const size_t len = total(iov);
        std::vector<uint8_t> flat(len);
        copy_in(flat.data(), iov);
        return put(off, len, flat.data());
    }
    int flush() override { return 0; }
    int discard(uint64_t off, uint64_t len) override { return write_zeroes(off, len); }
    int write_zeroes(uint64_t off, uint64_t len) override { return put(off, len, nullptr); }
    std::string describe() const override { return "snapshot overlay (RAM) over " + base_->describe(); }

private:
    static constexpr size_t kChunk = 4096;

    template <typename F>
    static void for_each_chunk(uint64_t off, size_t len, F&& f) {
        size_t pos = 0;
        while (pos < len) {
            const uint64_t idx = (off + pos) / kChunk;
            const size_t in_chunk = (off + pos) % kChunk;
            const size_t n = std::min(len - pos, kChunk - in_chunk);
            f(idx, in_chunk, pos, n);
            pos += n;
        }
    }

    // src == nullptr writes zeros.
    int put(uint64_t off, size_t len, const uint8_t* src) {
        std::lock_guard lock(mu_);
        int err = 0;
        for_each_chunk(off, len, [&](uint64_t idx, size_t in_chunk, size_t pos, size_t n) {
            if (err) return;
            auto it = chunks_.find(idx);
            if (it == chunks_.end()) {
                std::vector<uint8_t> c(kChunk, 0);
                const uint64_t base_off = idx * kChunk;
                const size_t valid = static_cast<size_t>(std::min<uint64_t>(kChunk, size() - base_off));
                if (n != kChunk) {
                    const iovec v{c.data(), valid};
                    if (int r = base_->read(base_off, std::span(&v, 1)); r < 0) {
                        err = r;
                        return;
                    }
                }
                it = chunks_.emplace(idx, std::move(c)).first;
            }
            if (src) std::memcpy(it->second.data() + in_chunk, src + pos, n);
            else std::memset(it->second.data() + in_chunk, 0, n);
        });
        return err;
    }

    std::unique_ptr<Store> base_;
    std::mutex mu_;
    std::unordered_map<uint64_t, std::vector<uint8_t>> chunks_;
};

}  // namespace

std::unique_ptr<Store> make_ram(uint64_t size) { return std::make_unique<RamStore>(size); }
std::unique_ptr<Store> make_overlay(std::unique_ptr<Store> base) { return std::make_unique<OverlayStore>(std::move(base)); }

}  // namespace blkrig::store
