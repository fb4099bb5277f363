#include "virtio/guest_memory.hpp"

namespace blkrig::virtio {

namespace {
// True if [addr, addr+len) lies inside [base, base+size), without overflow.
bool inside(uint64_t addr, uint64_t len, uint64_t base, uint64_t size) {
    if (addr < base) return false;
    const uint64_t off = addr - base;
    return off <= size && len <= size - off;
}
}  // namespace

bool GuestMemory::map(uint64_t gpa, uint64_t len, std::vector<iovec>& out) const {
    if (len > UINT64_MAX - gpa) return false;
    const size_t mark = out.size();
    while (len > 0) {
        const Region* hit = nullptr;
        for (const auto& r : regions_) {
            if (gpa >= r.guest_phys_addr && gpa - r.guest_phys_addr < r.size) {
                hit = &r;
                break;
            }
        }
        if (hit == nullptr) {
            out.resize(mark);
            return false;
        }
        const uint64_t off = gpa - hit->guest_phys_addr;
        const uint64_t n = std::min(len, hit->size - off);
        out.push_back(iovec{hit->host + off, static_cast<size_t>(n)});
        gpa += n;
        len -= n;
    }
    return true;
}

uint8_t* GuestMemory::map_contiguous(uint64_t gpa, uint64_t len) const {
    for (const auto& r : regions_) {
        if (inside(gpa, len, r.guest_phys_addr, r.size)) return r.host + (gpa - r.guest_phys_addr);
    }
    return nullptr;
}

uint8_t* GuestMemory::map_user(uint64_t uva, uint64_t len) const {
    for (const auto& r : regions_) {
        if (inside(uva, len, r.user_addr, r.size)) return r.host + (uva - r.user_addr);
    }
    return nullptr;
}

}  // namespace blkrig::virtio
