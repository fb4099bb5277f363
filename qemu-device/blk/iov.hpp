// A request's payload is guest memory spread over iovecs: the few things
// the device does to one without flattening it.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace blkrig::blk {

// The first BYTES bytes.
inline std::vector<iovec> iov_prefix(const std::vector<iovec>& data, uint64_t bytes) {
    std::vector<iovec> head;
    for (const auto& v : data) {
        if (bytes == 0) break;
        const size_t n = std::min<uint64_t>(bytes, v.iov_len);
        head.push_back({v.iov_base, n});
        bytes -= n;
    }
    return head;
}

// XORs byte OFFSET with MASK; false if the payload is shorter.
inline bool iov_xor_byte(const std::vector<iovec>& data, uint64_t offset, uint8_t mask) {
    for (const auto& v : data) {
        if (offset < v.iov_len) {
            static_cast<uint8_t*>(v.iov_base)[offset] ^= mask;
            return true;
        }
        offset -= v.iov_len;
    }
    return false;
}

// A copy of BYTES bytes in one buffer.
inline std::vector<uint8_t> iov_copy(const std::vector<iovec>& data, uint64_t bytes) {
    std::vector<uint8_t> out(bytes);
    uint64_t pos = 0;
    for (const auto& v : data) {
        const uint64_t n = std::min<uint64_t>(v.iov_len, bytes - pos);
        std::memcpy(out.data() + pos, v.iov_base, n);
        pos += n;
        if (pos == bytes) break;
    }
    return out;
}

}  // namespace blkrig::blk
