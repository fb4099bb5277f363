#include "virtio/chain.hpp"

#include <fmt/format.h>

#include <cstring>

namespace blkrig::virtio {

const char* to_string(ChainErrorKind kind) {
    switch (kind) {
    case ChainErrorKind::head_out_of_range: return "head index out of range";
    case ChainErrorKind::next_out_of_range: return "next index out of range";
    case ChainErrorKind::chain_too_long: return "chain longer than its table (descriptor loop)";
    case ChainErrorKind::nested_indirect: return "indirect descriptor inside an indirect table";
    case ChainErrorKind::indirect_not_negotiated: return "indirect descriptor but INDIRECT_DESC was not negotiated";
    case ChainErrorKind::indirect_with_next: return "indirect descriptor with NEXT set";
    case ChainErrorKind::indirect_bad_length: return "indirect table length is zero or not a multiple of 16";
    case ChainErrorKind::indirect_too_long: return "indirect table longer than a chain may be";
    case ChainErrorKind::indirect_unmapped: return "indirect table outside guest memory";
    case ChainErrorKind::buffer_unmapped: return "buffer outside guest memory";
    case ChainErrorKind::length_overflow: return "buffer lengths overflow";
    case ChainErrorKind::readable_after_writable: return "device-readable descriptor after a device-writable one";
    }
    return "unknown chain error";
}

std::string ChainError::message() const {
    return fmt::format("descriptor chain head {}: {} at {}descriptor {}{}{}", head, to_string(kind),
                       in_indirect ? "indirect " : "", desc, detail.empty() ? "" : ": ", detail);
}

namespace {

// Descriptor tables live in shared memory the driver may change under us:
// copy each descriptor once and decide on the copy.
RawDesc load(const RawDesc* table, uint32_t i) {
    RawDesc d;
    std::memcpy(&d, reinterpret_cast<const uint8_t*>(table) + static_cast<size_t>(i) * sizeof(RawDesc), sizeof d);
    return d;
}

// Upper bound on one request's bytes; far above any queue limit we advertise,
// low enough that sums stay far from overflow.
constexpr uint64_t kMaxChainBytes = 1ull << 32;

}  // namespace

std::variant<DescriptorChain, ChainError> walk_chain(const RawDesc* table, uint16_t queue_size, uint16_t head,
                                                     const GuestMemory& mem, bool indirect_allowed) {
    auto fail = [&](ChainErrorKind k, uint32_t desc, bool ind, std::string detail = {}) {
        return ChainError{k, head, static_cast<uint16_t>(desc), ind, std::move(detail)};
    };
    if (head >= queue_size) return fail(ChainErrorKind::head_out_of_range, head, false, fmt::format("queue size {}", queue_size));

    DescriptorChain chain;
    chain.head = head;

    const RawDesc* cur_table = table;
    uint32_t cur_size = queue_size;
    bool in_indirect = false;
    uint32_t idx = head;
    uint32_t seen = 0;
    bool saw_writable = false;

    for (;;) {
        if (++seen > cur_size) return fail(ChainErrorKind::chain_too_long, idx, in_indirect, fmt::format("{} descriptors", cur_size));
        const RawDesc d = load(cur_table, idx);

        if (d.flags & kDescFIndirect) {
            if (in_indirect) return fail(ChainErrorKind::nested_indirect, idx, in_indirect);
            if (!indirect_allowed) return fail(ChainErrorKind::indirect_not_negotiated, idx, in_indirect);
            if (d.flags & kDescFNext) return fail(ChainErrorKind::indirect_with_next, idx, in_indirect);
            if (d.len == 0 || d.len % sizeof(RawDesc) != 0)
                return fail(ChainErrorKind::indirect_bad_length, idx, in_indirect, fmt::format("len {}", d.len));
            if (d.len / sizeof(RawDesc) > kMaxIndirectEntries)
                return fail(ChainErrorKind::indirect_too_long, idx, in_indirect,
                            fmt::format("{} entries, at most {}", d.len / sizeof(RawDesc), kMaxIndirectEntries));
            const auto* ind = reinterpret_cast<const RawDesc*>(mem.map_contiguous(d.addr, d.len));
            if (ind == nullptr)
                return fail(ChainErrorKind::indirect_unmapped, idx, in_indirect, fmt::format("addr {:#x} len {}", d.addr, d.len));
            // A chain is either direct descriptors or one indirect table
            // (2.7.5.3.1: the driver MUST NOT set NEXT on an INDIRECT one,
            // so nothing follows). Buffers before it are kept.
            cur_table = ind;
            cur_size = d.len / sizeof(RawDesc);
            in_indirect = true;
            idx = 0;
            seen = 0;
            continue;
        }

        const bool writable = (d.flags & kDescFWrite) != 0;
        if (!writable && saw_writable) return fail(ChainErrorKind::readable_after_writable, idx, in_indirect);
        saw_writable = saw_writable || writable;

        if (d.len > UINT64_MAX - d.addr)
            return fail(ChainErrorKind::length_overflow, idx, in_indirect, fmt::format("addr {:#x} len {}", d.addr, d.len));
        uint64_t& total = writable ? chain.writable_bytes : chain.readable_bytes;
        total += d.len;
        if (chain.readable_bytes + chain.writable_bytes > kMaxChainBytes)
            return fail(ChainErrorKind::length_overflow, idx, in_indirect, "chain exceeds 4 GiB");

        Buffer b;
        b.gpa = d.addr;
        b.len = d.len;
        b.device_writable = writable;
        b.first_iov = static_cast<uint32_t>(chain.iov.size());
        if (!mem.map(d.addr, d.len, chain.iov))
            return fail(ChainErrorKind::buffer_unmapped, idx, in_indirect, fmt::format("addr {:#x} len {}", d.addr, d.len));
        b.n_iov = static_cast<uint32_t>(chain.iov.size()) - b.first_iov;
        chain.buffers.push_back(b);

        if (!(d.flags & kDescFNext)) break;
        if (d.next >= cur_size)
            return fail(ChainErrorKind::next_out_of_range, idx, in_indirect, fmt::format("next {} of {}", d.next, cur_size));
        idx = d.next;
    }
    return chain;
}

}  // namespace blkrig::virtio
