#include "vhost_user/message.hpp"

#include <fmt/format.h>

#include <cstring>

namespace blkrig::vhost_user {

const char* request_name(uint32_t r) {
    switch (r) {
#define NAME(x) \
    case x: return #x;
        NAME(GET_FEATURES) NAME(SET_FEATURES) NAME(SET_OWNER) NAME(RESET_OWNER) NAME(SET_MEM_TABLE) NAME(SET_LOG_BASE)
        NAME(SET_LOG_FD) NAME(SET_VRING_NUM) NAME(SET_VRING_ADDR) NAME(SET_VRING_BASE) NAME(GET_VRING_BASE)
        NAME(SET_VRING_KICK) NAME(SET_VRING_CALL) NAME(SET_VRING_ERR) NAME(GET_PROTOCOL_FEATURES)
        NAME(SET_PROTOCOL_FEATURES) NAME(GET_QUEUE_NUM) NAME(SET_VRING_ENABLE) NAME(SEND_RARP) NAME(NET_SET_MTU)
        NAME(SET_BACKEND_REQ_FD) NAME(IOTLB_MSG) NAME(SET_VRING_ENDIAN) NAME(GET_CONFIG) NAME(SET_CONFIG)
        NAME(GET_INFLIGHT_FD) NAME(SET_INFLIGHT_FD) NAME(RESET_DEVICE) NAME(GET_MAX_MEM_SLOTS) NAME(ADD_MEM_REG)
        NAME(REM_MEM_REG) NAME(SET_STATUS) NAME(GET_STATUS)
#undef NAME
    default: return "unknown";
    }
}

namespace {

template <typename T>
T get(const std::vector<uint8_t>& p, size_t off = 0) {
    T v;
    std::memcpy(&v, p.data() + off, sizeof v);
    return v;
}

std::string who(const Message& m) { return fmt::format("{} ({})", request_name(m.hdr.request), m.hdr.request); }

void expect_size(const Message& m, size_t n) {
    if (m.payload.size() != n)
        throw ProtocolError(fmt::format("{}: payload is {} bytes, expected {}", who(m), m.payload.size(), n));
}

void expect_fds(const Message& m, size_t n) {
    if (m.fds.size() != n)
        throw ProtocolError(fmt::format("{}: carries {} file descriptors, expected {}", who(m), m.fds.size(), n));
}

}  // namespace

Header parse_header(std::span<const uint8_t> b) {
    if (b.size() != kHeaderSize) throw ProtocolError(fmt::format("message header is {} bytes, expected 12", b.size()));
    Header h;
    std::memcpy(&h.request, b.data(), 4);
    std::memcpy(&h.flags, b.data() + 4, 4);
    std::memcpy(&h.size, b.data() + 8, 4);
    if ((h.flags & kFlagVersionMask) != kVersion)
        throw ProtocolError(fmt::format("{} ({}): protocol version {} in flags {:#x}, expected 1", request_name(h.request),
                                        h.request, h.flags & kFlagVersionMask, h.flags));
    if (h.size > kMaxPayload)
        throw ProtocolError(fmt::format("{} ({}): payload size {} exceeds {}", request_name(h.request), h.request, h.size, kMaxPayload));
    return h;
}

uint64_t decode_u64(const Message& m) {
    expect_size(m, 8);
    expect_fds(m, 0);
    return get<uint64_t>(m.payload);
}

VringState decode_vring_state(const Message& m) {
    expect_size(m, sizeof(VringState));
    expect_fds(m, 0);
    return get<VringState>(m.payload);
}

VringAddr decode_vring_addr(const Message& m) {
    expect_size(m, sizeof(VringAddr));
    expect_fds(m, 0);
    return get<VringAddr>(m.payload);
}

std::vector<MemRegionDesc> decode_mem_table(const Message& m) {
    if (m.payload.size() < 8) throw ProtocolError(fmt::format("{}: payload is {} bytes, shorter than 8", who(m), m.payload.size()));
    const uint32_t n = get<uint32_t>(m.payload);
    if (n == 0 || n > kMaxMemRegions)
        throw ProtocolError(fmt::format("{}: {} regions, expected 1 to {}", who(m), n, kMaxMemRegions));
    expect_size(m, 8 + n * sizeof(MemRegionDesc));
    expect_fds(m, n);
    std::vector<MemRegionDesc> out(n);
    for (uint32_t i = 0; i < n; ++i) {
        out[i] = get<MemRegionDesc>(m.payload, 8 + i * sizeof(MemRegionDesc));
        const auto& r = out[i];
        if (r.memory_size == 0 || r.guest_phys_addr + r.memory_size < r.guest_phys_addr ||
            r.userspace_addr + r.memory_size < r.userspace_addr || r.mmap_offset + r.memory_size < r.mmap_offset)
            throw ProtocolError(fmt::format("{}: region {} (gpa {:#x} size {:#x} uva {:#x} offset {:#x}) is empty or wraps",
                                            who(m), i, r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset));
    }
    return out;
}

ConfigPayload decode_config(const Message& m, bool with_data) {
    if (m.payload.size() < 12) throw ProtocolError(fmt::format("{}: payload is {} bytes, shorter than 12", who(m), m.payload.size()));
    expect_fds(m, 0);
    ConfigPayload c;
    c.offset = get<uint32_t>(m.payload, 0);
    c.size = get<uint32_t>(m.payload, 4);
    c.flags = get<uint32_t>(m.payload, 8);
    if (c.size > kMaxConfigSize) throw ProtocolError(fmt::format("{}: config size {} exceeds {}", who(m), c.size, kMaxConfigSize));
    // GET_CONFIG carries a buffer of `size` bytes too (its contents are ignored).
    expect_size(m, 12 + c.size);
    if (with_data) c.data.assign(m.payload.begin() + 12, m.payload.end());
    return c;
}

VringFd decode_vring_fd(const Message& m) {
    expect_size(m, 8);
    const uint64_t v = get<uint64_t>(m.payload);
    if (v & ~(kVringIndexMask | kVringNoFd)) throw ProtocolError(fmt::format("{}: reserved bits set in {:#x}", who(m), v));
    VringFd f{static_cast<uint32_t>(v & kVringIndexMask), (v & kVringNoFd) == 0};
    expect_fds(m, f.has_fd ? 1 : 0);
    return f;
}

InflightInfo decode_inflight(const Message& m) {
    // QEMU sends the C struct, 20 bytes of fields padded to 24.
    if (m.payload.size() != 24 && m.payload.size() != 20)
        throw ProtocolError(fmt::format("{}: payload is {} bytes, expected 24", who(m), m.payload.size()));
    expect_fds(m, m.hdr.request == SET_INFLIGHT_FD ? 1 : 0);
    InflightInfo d;
    d.mmap_size = get<uint64_t>(m.payload, 0);
    d.mmap_offset = get<uint64_t>(m.payload, 8);
    d.num_queues = get<uint16_t>(m.payload, 16);
    d.queue_size = get<uint16_t>(m.payload, 18);
    return d;
}

std::vector<uint8_t> encode_inflight(const InflightInfo& d) {
    std::vector<uint8_t> out(24, 0);
    std::memcpy(out.data(), &d.mmap_size, 8);
    std::memcpy(out.data() + 8, &d.mmap_offset, 8);
    std::memcpy(out.data() + 16, &d.num_queues, 2);
    std::memcpy(out.data() + 18, &d.queue_size, 2);
    return out;
}

std::vector<uint8_t> encode_reply(uint32_t request, std::span<const uint8_t> payload) {
    std::vector<uint8_t> out(kHeaderSize + payload.size());
    const uint32_t flags = kVersion | kFlagReply;
    const auto size = static_cast<uint32_t>(payload.size());
    std::memcpy(out.data(), &request, 4);
    std::memcpy(out.data() + 4, &flags, 4);
    std::memcpy(out.data() + 8, &size, 4);
    if (!payload.empty()) std::memcpy(out.data() + kHeaderSize, payload.data(), payload.size());
    return out;
}

std::vector<uint8_t> encode_u64_reply(uint32_t request, uint64_t value) {
    uint8_t b[8];
    std::memcpy(b, &value, 8);
    return encode_reply(request, b);
}

}  // namespace blkrig::vhost_user
