// Guest memory as the device sees it: a set of regions, each known by its
// guest-physical address (used in descriptors) and the front end's virtual
// address (used by SET_VRING_ADDR). The session owns the mappings; this
// type only translates, so unit tests can put a plain buffer behind it.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace blkrig::virtio {

struct Region {
    uint64_t guest_phys_addr = 0;
    uint64_t size = 0;
    uint64_t user_addr = 0;  // front end's virtual address of the region
    uint8_t* host = nullptr; // where the region is mapped in this process
};

class GuestMemory {
public:
    GuestMemory() = default;
    explicit GuestMemory(std::vector<Region> regions) : regions_(std::move(regions)) {}

    // Appends host buffers covering [gpa, gpa+len) to out, split where the
    // range crosses regions. False (out unchanged) if any byte is unmapped
    // or the range wraps around the address space.
    bool map(uint64_t gpa, uint64_t len, std::vector<iovec>& out) const;

    // One contiguous host pointer for [gpa, gpa+len), or null. For structures
    // that must not be split (indirect descriptor tables).
    uint8_t* map_contiguous(uint64_t gpa, uint64_t len) const;

    // Front-end virtual address to host pointer for [uva, uva+len), or null.
    uint8_t* map_user(uint64_t uva, uint64_t len) const;

    const std::vector<Region>& regions() const { return regions_; }

private:
    std::vector<Region> regions_;
};

}  // namespace blkrig::virtio
