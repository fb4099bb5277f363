// virtio-blk request parsing (virtio 1.x 5.2.6): a descriptor chain becomes
// a Request or a RequestError. Pure: nothing here touches the store, and the
// only guest memory it reads is the header and discard/write-zeroes ranges.
#pragma once

#include "virtio/chain.hpp"
#include "common/sectors.hpp"

#include <linux/virtio_blk.h>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace blkrig::blk {

inline constexpr uint32_t kSectorSize = sectors::kSize;
inline constexpr uint32_t kHeaderSize = 16;
inline constexpr uint32_t kGetIdBytes = VIRTIO_BLK_ID_BYTES;
inline constexpr uint32_t kTypeGetLifetime = 10;  // VIRTIO_BLK_T_GET_LIFETIME, newer than this uapi header

struct Range {  // one virtio_blk_discard_write_zeroes segment
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

struct Request {
    uint32_t type = 0;     // VIRTIO_BLK_T_*
    uint32_t ioprio = 0;
    uint64_t sector = 0;
    std::vector<iovec> data;        // the payload, without header and status byte
    uint64_t data_bytes = 0;
    std::vector<uint32_t> seg_lens; // payload bytes per descriptor, in chain order
    std::vector<Range> ranges;      // DISCARD / WRITE_ZEROES only
    uint8_t* status = nullptr;      // the last device-writable byte
};

enum class RequestErrorKind {
    no_status_byte,       // no device-writable byte at the end: nothing can be reported
    header_too_short,     // fewer than 16 device-readable bytes
    wrong_direction,      // payload in buffers of the wrong direction for the type
    bad_ranges,           // discard/write-zeroes payload not a whole number of segments
};

struct RequestError {
    RequestErrorKind kind;
    uint32_t type = UINT32_MAX;   // known once the header was read
    uint64_t sector = 0;
    uint8_t* status = nullptr;    // set when an IOERR can still be reported
    std::string detail;

    std::string message() const;
};

std::variant<Request, RequestError> parse_request(const virtio::DescriptorChain& chain);

}  // namespace blkrig::blk
