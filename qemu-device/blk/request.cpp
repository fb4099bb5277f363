#include "blk/request.hpp"

#include <fmt/format.h>

#include <cstring>

namespace blkrig::blk {

std::string RequestError::message() const {
    const char* what = "";
    switch (kind) {
    case RequestErrorKind::no_status_byte: what = "no device-writable status byte at the end of the chain"; break;
    case RequestErrorKind::header_too_short: what = "request header shorter than 16 bytes"; break;
    case RequestErrorKind::wrong_direction: what = "payload in buffers of the wrong direction"; break;
    case RequestErrorKind::bad_ranges: what = "discard/write-zeroes payload is not whole 16-byte segments"; break;
    }
    return detail.empty() ? std::string(what) : fmt::format("{}: {}", what, detail);
}

namespace {

// Copies n bytes starting at byte offset `from` of the iovec list.
void gather(const std::vector<iovec>& iov, uint64_t from, void* dst, size_t n) {
    auto* out = static_cast<uint8_t*>(dst);
    for (const auto& v : iov) {
        if (n == 0) return;
        if (from >= v.iov_len) {
            from -= v.iov_len;
            continue;
        }
        const size_t take = std::min<size_t>(n, v.iov_len - from);
        std::memcpy(out, static_cast<uint8_t*>(v.iov_base) + from, take);
        out += take;
        n -= take;
        from = 0;
    }
}

// Appends the part [from, from+len) of buffer b (in chain byte offsets of the
// buffer itself) to data, and its length to segs.
void take_slice(const virtio::DescriptorChain& c, const virtio::Buffer& b, uint64_t from, uint64_t len,
                std::vector<iovec>& data, std::vector<uint32_t>& segs) {
    if (len == 0) return;
    segs.push_back(static_cast<uint32_t>(len));
    for (uint32_t i = 0; i < b.n_iov && len > 0; ++i) {
        const iovec& v = c.iov[b.first_iov + i];
        if (from >= v.iov_len) {
            from -= v.iov_len;
            continue;
        }
        const size_t take = std::min<uint64_t>(len, v.iov_len - from);
        data.push_back(iovec{static_cast<uint8_t*>(v.iov_base) + from, take});
        len -= take;
        from = 0;
    }
}

uint8_t* last_writable_byte(const virtio::DescriptorChain& c) {
    for (auto it = c.buffers.rbegin(); it != c.buffers.rend(); ++it) {
        if (!it->device_writable) break;
        for (uint32_t i = it->n_iov; i > 0; --i) {
            const iovec& v = c.iov[it->first_iov + i - 1];
            if (v.iov_len > 0) return static_cast<uint8_t*>(v.iov_base) + v.iov_len - 1;
        }
    }
    return nullptr;
}

}  // namespace

std::variant<Request, RequestError> parse_request(const virtio::DescriptorChain& c) {
    uint8_t* status = last_writable_byte(c);
    if (status == nullptr) return RequestError{RequestErrorKind::no_status_byte, UINT32_MAX, 0, nullptr, {}};
    if (c.readable_bytes < kHeaderSize)
        return RequestError{RequestErrorKind::header_too_short, UINT32_MAX, 0, status,
                            fmt::format("{} device-readable bytes", c.readable_bytes)};

    std::vector<iovec> readable;
    for (const auto& b : c.buffers)
        if (!b.device_writable)
            for (uint32_t i = 0; i < b.n_iov; ++i) readable.push_back(c.iov[b.first_iov + i]);
    virtio_blk_outhdr hdr{};
    gather(readable, 0, &hdr, sizeof hdr);

    Request r;
    r.type = hdr.type;
    r.ioprio = hdr.ioprio;
    r.sector = hdr.sector;
    r.status = status;

    const uint64_t in_payload = c.writable_bytes - 1;           // device-writable, minus status
    const uint64_t out_payload = c.readable_bytes - kHeaderSize; // device-readable, minus header
    auto wrong = [&](const char* why) {
        return RequestError{RequestErrorKind::wrong_direction, r.type, r.sector, status, why};
    };

    // Payload slices: readable bytes after the header, writable bytes before the status.
    uint64_t rpos = 0;
    uint64_t wpos = 0;
    for (const auto& b : c.buffers) {
        if (!b.device_writable) {
            const uint64_t start = rpos < kHeaderSize ? std::min<uint64_t>(kHeaderSize - rpos, b.len) : 0;
            if (out_payload > 0) take_slice(c, b, start, b.len - start, r.data, r.seg_lens);
            rpos += b.len;
        } else {
            const uint64_t end = std::min<uint64_t>(b.len, in_payload > wpos ? in_payload - wpos : 0);
            if (in_payload > 0) take_slice(c, b, 0, end, r.data, r.seg_lens);
            wpos += b.len;
        }
    }

    switch (r.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_GET_ID:
    case kTypeGetLifetime:
        if (out_payload != 0) return wrong("device-readable payload on a request that returns data");
        r.data_bytes = in_payload;
        break;
    case VIRTIO_BLK_T_OUT:
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
    case VIRTIO_BLK_T_SECURE_ERASE:
        if (in_payload != 0) return wrong("device-writable payload on a request that carries data to the device");
        r.data_bytes = out_payload;
        break;
    default:  // FLUSH and unknown types carry no payload we look at
        r.data_bytes = in_payload + out_payload;
        break;
    }

    if (r.type == VIRTIO_BLK_T_DISCARD || r.type == VIRTIO_BLK_T_WRITE_ZEROES || r.type == VIRTIO_BLK_T_SECURE_ERASE) {
        if (r.data_bytes == 0 || r.data_bytes % sizeof(virtio_blk_discard_write_zeroes) != 0)
            return RequestError{RequestErrorKind::bad_ranges, r.type, r.sector, status, fmt::format("{} bytes", r.data_bytes)};
        const size_t n = r.data_bytes / sizeof(virtio_blk_discard_write_zeroes);
        r.ranges.resize(n);
        for (size_t i = 0; i < n; ++i) {
            virtio_blk_discard_write_zeroes seg{};
            gather(r.data, i * sizeof seg, &seg, sizeof seg);
            r.ranges[i] = Range{seg.sector, seg.num_sectors, seg.flags};
        }
        if (n > 0) r.sector = r.ranges[0].sector;
    }
    return r;
}

}  // namespace blkrig::blk
