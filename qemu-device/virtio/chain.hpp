// Descriptor chain walk for split virtqueues (virtio 1.x, 2.7.5 and 2.7.5.3).
// A pure function: it reads the descriptor table and guest memory, writes
// nothing, and turns a head index into the buffers the driver offered or a
// ChainError saying what the driver got wrong.
#pragma once

#include "virtio/guest_memory.hpp"

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace blkrig::virtio {

inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;

// The layout of one descriptor in guest memory (little endian, 16 bytes).
struct RawDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(RawDesc) == 16);

// One descriptor's buffer, mapped into host memory.
struct Buffer {
    uint64_t gpa = 0;
    uint32_t len = 0;
    bool device_writable = false;
    uint32_t first_iov = 0;  // index into DescriptorChain::iov
    uint32_t n_iov = 0;
};

struct DescriptorChain {
    uint16_t head = 0;
    std::vector<Buffer> buffers;  // device-readable first, then device-writable
    std::vector<iovec> iov;       // host buffers, in chain order
    uint64_t readable_bytes = 0;
    uint64_t writable_bytes = 0;
};

// Every way a driver can break a chain. Each is the driver's fault; the
// queue that carried it can no longer be trusted (virtio 1.x 2.1.2:
// DEVICE_NEEDS_RESET), so the caller stops that queue.
enum class ChainErrorKind {
    head_out_of_range,
    next_out_of_range,
    chain_too_long,        // more descriptors than the table holds: a loop
    nested_indirect,
    indirect_not_negotiated,
    indirect_with_next,
    indirect_bad_length,   // zero or not a multiple of 16
    indirect_too_long,     // more entries than kMaxIndirectEntries
    indirect_unmapped,
    buffer_unmapped,
    length_overflow,
    readable_after_writable,
};

struct ChainError {
    ChainErrorKind kind;
    uint16_t head = 0;
    uint16_t desc = 0;      // index of the offending descriptor in its table
    bool in_indirect = false;
    std::string detail;

    std::string message() const;
};

const char* to_string(ChainErrorKind kind);

// The most entries an indirect table may hold. The spec bounds a whole chain
// by the queue size (2.7.5.3.1), but Linux sizes indirect tables by seg_max
// (up to 1024 here, plus header and status) whatever the ring's size, so
// that bound would refuse real guests on small rings. This one keeps a
// hostile table (up to 2^28 entries by its length) from costing more than a
// few pages and a long walk; QEMU and libvhost-user stop at 1024.
inline constexpr uint32_t kMaxIndirectEntries = 1024 + 2;

// Walks the chain starting at head in a descriptor table of queue_size
// entries. indirect_allowed is VIRTIO_RING_F_INDIRECT_DESC as negotiated.
std::variant<DescriptorChain, ChainError> walk_chain(const RawDesc* table, uint16_t queue_size, uint16_t head,
                                                     const GuestMemory& mem, bool indirect_allowed);

}  // namespace blkrig::virtio
