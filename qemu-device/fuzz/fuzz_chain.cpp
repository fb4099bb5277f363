// Fuzzes the guest-facing parsers: descriptor chain walk then virtio-blk
// request parsing, over guest memory the fuzzer fills. Checks that every
// host buffer handed out lies inside guest memory.
#include "blk/request.hpp"
#include "virtio/chain.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <variant>
#include <vector>

using namespace blkrig;

namespace {
constexpr uint64_t kGpa = 0x10000;
constexpr size_t kMem = 1 << 16;

void check_inside(const iovec& v, const uint8_t* base) {
    const auto* p = static_cast<const uint8_t*>(v.iov_base);
    if (v.iov_len == 0) return;
    if (p < base || p + v.iov_len > base + kMem) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 4) return 0;
    // Input: u16 queue size, u16 head with two flags (bit 15: indirect
    // descriptors negotiated, bit 14: structured), then the memory image
    // (the descriptor table is at the start of guest memory). Structured:
    // every descriptor's address is folded into guest memory, so the fuzzer
    // spends its time on lengths, flags and links rather than on finding
    // an address that maps (rust-vmm's fuzz/ builds chains the same way).
    uint16_t qsize, head;
    std::memcpy(&qsize, data, 2);
    std::memcpy(&head, data + 2, 2);
    qsize = static_cast<uint16_t>(1u << (qsize % 11));  // 1..1024
    const bool indirect = (head & 0x8000) != 0;
    const bool structured = (head & 0x4000) != 0;
    head &= 0x3fff;
    static std::vector<uint8_t> mem(kMem);
    std::memset(mem.data(), 0, kMem);
    std::memcpy(mem.data(), data + 4, std::min(size - 4, kMem));
    virtio::GuestMemory gm({virtio::Region{kGpa, kMem / 2, 0, mem.data()}, virtio::Region{kGpa + kMem / 2, kMem / 2, 0, mem.data() + kMem / 2}});
    if (static_cast<size_t>(qsize) * 16 > kMem) return 0;
    if (structured) {
        // The ring's table only: request headers and data stay as given.
        for (size_t off = 0; off < static_cast<size_t>(qsize) * 16; off += 16) {
            uint64_t addr;
            std::memcpy(&addr, mem.data() + off, 8);
            addr = kGpa + addr % kMem;
            std::memcpy(mem.data() + off, &addr, 8);
        }
    }
    auto walked = virtio::walk_chain(reinterpret_cast<const virtio::RawDesc*>(mem.data()), qsize, head, gm, indirect);
    if (auto* c = std::get_if<virtio::DescriptorChain>(&walked)) {
        for (const auto& v : c->iov) check_inside(v, mem.data());
        auto parsed = blk::parse_request(*c);
        if (auto* r = std::get_if<blk::Request>(&parsed)) {
            for (const auto& v : r->data) check_inside(v, mem.data());
            if (r->status < mem.data() || r->status >= mem.data() + kMem) std::abort();
        }
    }
    return 0;
}
