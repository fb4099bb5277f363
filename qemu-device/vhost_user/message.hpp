// vhost-user messages (QEMU docs/interop/vhost-user.rst, "Message
// specification"): the wire layouts and pure decoders. Each decoder checks
// the payload size and the file descriptors a request must carry, and
// throws ProtocolError naming the request and what was wrong.
#pragma once

#include "common/fd.hpp"

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace blkrig::vhost_user {

enum Request : uint32_t {
    GET_FEATURES = 1,
    SET_FEATURES = 2,
    SET_OWNER = 3,
    RESET_OWNER = 4,
    SET_MEM_TABLE = 5,
    SET_LOG_BASE = 6,
    SET_LOG_FD = 7,
    SET_VRING_NUM = 8,
    SET_VRING_ADDR = 9,
    SET_VRING_BASE = 10,
    GET_VRING_BASE = 11,
    SET_VRING_KICK = 12,
    SET_VRING_CALL = 13,
    SET_VRING_ERR = 14,
    GET_PROTOCOL_FEATURES = 15,
    SET_PROTOCOL_FEATURES = 16,
    GET_QUEUE_NUM = 17,
    SET_VRING_ENABLE = 18,
    SEND_RARP = 19,
    NET_SET_MTU = 20,
    SET_BACKEND_REQ_FD = 21,
    IOTLB_MSG = 22,
    SET_VRING_ENDIAN = 23,
    GET_CONFIG = 24,
    SET_CONFIG = 25,
    GET_INFLIGHT_FD = 31,
    SET_INFLIGHT_FD = 32,
    RESET_DEVICE = 34,
    GET_MAX_MEM_SLOTS = 36,
    ADD_MEM_REG = 37,
    REM_MEM_REG = 38,
    SET_STATUS = 39,
    GET_STATUS = 40,
};

const char* request_name(uint32_t request);  // "SET_MEM_TABLE", or "unknown"

// Protocol feature bits.
inline constexpr int kProtoMq = 0;
inline constexpr int kProtoReplyAck = 3;
inline constexpr int kProtoConfig = 9;
inline constexpr int kProtoInflightShmfd = 12;
// Virtio feature bit 30 means "protocol features supported" in vhost-user.
inline constexpr int kFProtocolFeatures = 30;

inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kFlagVersionMask = 0x3;
inline constexpr uint32_t kFlagReply = 1u << 2;
inline constexpr uint32_t kFlagNeedReply = 1u << 3;
inline constexpr size_t kHeaderSize = 12;
inline constexpr uint32_t kMaxPayload = 4096;
inline constexpr size_t kMaxFds = 8;
inline constexpr size_t kMaxMemRegions = 8;
inline constexpr uint32_t kMaxConfigSize = 256;
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFd = 1u << 8;

struct ProtocolError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Header {
    uint32_t request = 0;
    uint32_t flags = 0;
    uint32_t size = 0;
};

struct Message {
    Header hdr;
    std::vector<uint8_t> payload;
    std::vector<UniqueFd> fds;
};

struct VringState {
    uint32_t index;
    uint32_t num;
};
struct VringAddr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc;
    uint64_t used;
    uint64_t avail;
    uint64_t log;
};
struct MemRegionDesc {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
};
struct ConfigPayload {
    uint32_t offset = 0;
    uint32_t size = 0;
    uint32_t flags = 0;
    std::vector<uint8_t> data;
};
// GET_INFLIGHT_FD / SET_INFLIGHT_FD ("Inflight description").
struct InflightInfo {
    uint64_t mmap_size = 0;
    uint64_t mmap_offset = 0;
    uint16_t num_queues = 0;
    uint16_t queue_size = 0;
};
struct VringFd {
    uint32_t index;
    bool has_fd;  // false: the front end asked for polling (no fd)
};

// The 12 header bytes; throws on a bad version or oversized payload.
Header parse_header(std::span<const uint8_t> bytes);

uint64_t decode_u64(const Message& m);
VringState decode_vring_state(const Message& m);
VringAddr decode_vring_addr(const Message& m);
std::vector<MemRegionDesc> decode_mem_table(const Message& m);  // fds: one per region
ConfigPayload decode_config(const Message& m, bool with_data);
VringFd decode_vring_fd(const Message& m);                       // fds: one unless has_fd is false
InflightInfo decode_inflight(const Message& m);  // GET_INFLIGHT_FD: no fd; SET_INFLIGHT_FD: one
std::vector<uint8_t> encode_inflight(const InflightInfo& d);  // the 24-byte payload

// A reply to `request` with the given payload.
std::vector<uint8_t> encode_reply(uint32_t request, std::span<const uint8_t> payload);
std::vector<uint8_t> encode_u64_reply(uint32_t request, uint64_t value);

}  // namespace blkrig::vhost_user
