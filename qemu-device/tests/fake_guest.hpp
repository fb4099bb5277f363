// In-process guest memory for unit tests: a host buffer behind a
// virtio::GuestMemory, plus helpers to place descriptors, tables and request
// buffers at chosen guest-physical addresses.
#pragma once

#include "virtio/chain.hpp"
#include "virtio/guest_memory.hpp"

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>
#include <stdexcept>
#include <vector>

namespace blkrig::test {

class FakeGuest {
public:
    static constexpr uint64_t kBase = 0x1000;
    static constexpr uint64_t kRegionSize = 0x10000;
    // With two regions, the second is mapped this far after the first in the
    // host buffer, so code that assumed guest-contiguous means
    // host-contiguous would read the wrong bytes.
    static constexpr uint64_t kHostGap = 0x1000;

    explicit FakeGuest(int regions = 1) {
        if (regions < 1 || regions > 2) throw std::invalid_argument("FakeGuest: 1 or 2 regions");
        buf_.assign(static_cast<size_t>(regions) * kRegionSize + (regions - 1) * kHostGap, 0);
        std::vector<virtio::Region> r;
        for (int i = 0; i < regions; ++i) {
            const uint64_t gpa = kBase + static_cast<uint64_t>(i) * kRegionSize;
            uint8_t* host = buf_.data() + static_cast<size_t>(i) * (kRegionSize + kHostGap);
            // user_addr stands in for the front end's address space; offset it
            // from the gpa so a mix-up between the two shows.
            r.push_back(virtio::Region{gpa, kRegionSize, 0x7f0000000000ull + gpa, host});
        }
        mem_ = virtio::GuestMemory(std::move(r));
        next_ = kBase;
        end_ = kBase + static_cast<uint64_t>(regions) * kRegionSize;
    }

    FakeGuest(const FakeGuest&) = delete;
    FakeGuest& operator=(const FakeGuest&) = delete;

    const virtio::GuestMemory& mem() const { return mem_; }
    uint64_t end() const { return end_; }                      // one past the last mapped gpa
    uint64_t boundary() const { return kBase + kRegionSize; }  // where region 1 starts

    // Host address of [gpa, gpa+len), which must lie in one region.
    uint8_t* host(uint64_t gpa, uint64_t len = 1) const {
        uint8_t* p = mem_.map_contiguous(gpa, len);
        if (p == nullptr) throw std::out_of_range("FakeGuest::host: range not inside one region");
        return p;
    }

    // Byte copies that may cross regions.
    void write(uint64_t gpa, const void* src, size_t len) {
        const auto* s = static_cast<const uint8_t*>(src);
        for (const auto& v : iov(gpa, len)) {
            std::memcpy(v.iov_base, s, v.iov_len);
            s += v.iov_len;
        }
    }
    void read(uint64_t gpa, void* dst, size_t len) const {
        auto* d = static_cast<uint8_t*>(dst);
        for (const auto& v : iov(gpa, len)) {
            std::memcpy(d, v.iov_base, v.iov_len);
            d += v.iov_len;
        }
    }
    std::vector<uint8_t> bytes(uint64_t gpa, size_t len) const {
        std::vector<uint8_t> out(len);
        read(gpa, out.data(), len);
        return out;
    }
    void fill(uint64_t gpa, uint8_t value, size_t len) {
        for (const auto& v : iov(gpa, len)) std::memset(v.iov_base, value, v.iov_len);
    }
    template <typename T>
    void put(uint64_t gpa, const T& v) {
        write(gpa, &v, sizeof v);
    }
    template <typename T>
    T get(uint64_t gpa) const {
        T v;
        read(gpa, &v, sizeof v);
        return v;
    }

    // Bump allocator over guest memory; never straddles a region boundary
    // (tests that want that choose addresses themselves).
    uint64_t alloc(uint64_t len, uint64_t align = 16) {
        uint64_t at = (next_ + align - 1) / align * align;
        if (at < boundary() && at + len > boundary()) at = boundary();
        if (at + len > end_) throw std::length_error("FakeGuest::alloc: out of guest memory");
        next_ = at + len;
        return at;
    }

    // Descriptor tables live in guest memory like the driver's.
    void set_desc(uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
        put(table + 16ull * i, virtio::RawDesc{addr, len, flags, next});
    }
    virtio::RawDesc desc(uint64_t table, uint16_t i) const { return get<virtio::RawDesc>(table + 16ull * i); }
    const virtio::RawDesc* table(uint64_t gpa, uint16_t entries) const {
        return reinterpret_cast<const virtio::RawDesc*>(host(gpa, 16ull * entries));
    }

    struct Seg {
        uint64_t gpa;
        uint32_t len;
        bool writable;
    };

    // Writes segs as one NEXT-linked chain at the given table indices.
    void link(uint64_t table, std::span<const uint16_t> indices, std::span<const Seg> segs) {
        if (indices.size() != segs.size()) throw std::invalid_argument("FakeGuest::link: indices and segs differ in length");
        for (size_t i = 0; i < segs.size(); ++i) {
            const bool last = i + 1 == segs.size();
            uint16_t flags = segs[i].writable ? virtio::kDescFWrite : 0;
            if (!last) flags |= virtio::kDescFNext;
            set_desc(table, indices[i], segs[i].gpa, segs[i].len, flags, last ? 0 : indices[i + 1]);
        }
    }
    // The same at consecutive indices first, first+1, ...; returns first (the head).
    uint16_t link(uint64_t table, uint16_t first, std::initializer_list<Seg> segs) {
        std::vector<uint16_t> idx;
        for (size_t i = 0; i < segs.size(); ++i) idx.push_back(static_cast<uint16_t>(first + i));
        link(table, idx, std::span<const Seg>(segs.begin(), segs.size()));
        return first;
    }

    std::vector<uint8_t> snapshot() const { return buf_; }

private:
    std::vector<iovec> iov(uint64_t gpa, size_t len) const {
        std::vector<iovec> out;
        if (!mem_.map(gpa, len, out)) throw std::out_of_range("FakeGuest: range not mapped");
        return out;
    }

    std::vector<uint8_t> buf_;
    virtio::GuestMemory mem_;
    uint64_t next_ = 0;
    uint64_t end_ = 0;
};

}  // namespace blkrig::test
