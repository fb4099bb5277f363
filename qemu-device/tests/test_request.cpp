// blk::parse_request: descriptor chains to virtio-blk requests, and each way
// a chain can fail to be a request.
#include "blk_chain.hpp"

#include "blk/request.hpp"

#include <gtest/gtest.h>

namespace blkrig::blk {
namespace {

using test::BlkChains;
using Seg = test::FakeGuest::Seg;

class RequestTest : public ::testing::Test {
protected:
    Request parse_ok(const virtio::DescriptorChain& c) {
        auto r = parse_request(c);
        if (auto* e = std::get_if<RequestError>(&r)) {
            ADD_FAILURE() << "unexpected request error: " << e->message();
            return {};
        }
        return std::get<Request>(std::move(r));
    }
    RequestError parse_err(const virtio::DescriptorChain& c) {
        auto r = parse_request(c);
        if (!std::holds_alternative<RequestError>(r)) {
            ADD_FAILURE() << "request was accepted";
            return {};
        }
        return std::get<RequestError>(std::move(r));
    }
    // The request's payload iovecs, flattened to (host pointer, length) pairs.
    static std::vector<std::pair<void*, size_t>> iovs(const Request& r) {
        std::vector<std::pair<void*, size_t>> out;
        for (const auto& v : r.data) out.emplace_back(v.iov_base, v.iov_len);
        return out;
    }

    BlkChains b_;
};

TEST_F(RequestTest, ReadWithSeparateDataAndStatus) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, 7), data = b_.g.alloc(4096), st = b_.status();
    const auto r = parse_ok(b_.walk({Seg{hdr, 16, false}, Seg{data, 4096, true}, Seg{st, 1, true}}));
    EXPECT_EQ(r.type, uint32_t{VIRTIO_BLK_T_IN});
    EXPECT_EQ(r.sector, 7u);
    EXPECT_EQ(r.data_bytes, 4096u);
    EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{4096}));
    EXPECT_EQ(iovs(r), (std::vector<std::pair<void*, size_t>>{{b_.g.host(data), 4096}}));
    EXPECT_EQ(r.status, b_.g.host(st));
    EXPECT_TRUE(r.ranges.empty());
}

TEST_F(RequestTest, ReadWithStatusSharingTheLastDataDescriptor) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, 1), d0 = b_.g.alloc(512), d1 = b_.g.alloc(1024 + 1);
    const auto r = parse_ok(b_.walk({Seg{hdr, 16, false}, Seg{d0, 512, true}, Seg{d1, 1024 + 1, true}}));
    EXPECT_EQ(r.data_bytes, 1536u);
    EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{512, 1024}));
    EXPECT_EQ(iovs(r), (std::vector<std::pair<void*, size_t>>{{b_.g.host(d0), 512}, {b_.g.host(d1), 1024}}));
    EXPECT_EQ(r.status, b_.g.host(d1) + 1024);
}

TEST_F(RequestTest, WriteWithTwoDataDescriptors) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, 99), d0 = b_.g.alloc(512), d1 = b_.g.alloc(1024), st = b_.status();
    const auto r = parse_ok(b_.walk({Seg{hdr, 16, false}, Seg{d0, 512, false}, Seg{d1, 1024, false}, Seg{st, 1, true}}));
    EXPECT_EQ(r.type, uint32_t{VIRTIO_BLK_T_OUT});
    EXPECT_EQ(r.sector, 99u);
    EXPECT_EQ(r.data_bytes, 1536u);
    EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{512, 1024}));
    EXPECT_EQ(iovs(r), (std::vector<std::pair<void*, size_t>>{{b_.g.host(d0), 512}, {b_.g.host(d1), 1024}}));
    EXPECT_EQ(r.status, b_.g.host(st));
}

TEST_F(RequestTest, WriteWithHeaderAndDataInOneDescriptor) {
    const uint64_t hdr = b_.g.alloc(16 + 512), st = b_.status();
    b_.put_header(hdr, VIRTIO_BLK_T_OUT, 3);
    const auto r = parse_ok(b_.walk({Seg{hdr, 16 + 512, false}, Seg{st, 1, true}}));
    EXPECT_EQ(r.data_bytes, 512u);
    EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{512}));
    EXPECT_EQ(iovs(r), (std::vector<std::pair<void*, size_t>>{{b_.g.host(hdr) + 16, 512}}));
}

TEST_F(RequestTest, Flush) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_FLUSH, 0), st = b_.status();
    const auto r = parse_ok(b_.walk({Seg{hdr, 16, false}, Seg{st, 1, true}}));
    EXPECT_EQ(r.type, uint32_t{VIRTIO_BLK_T_FLUSH});
    EXPECT_EQ(r.data_bytes, 0u);
    EXPECT_TRUE(r.seg_lens.empty());
    EXPECT_TRUE(r.data.empty());
    EXPECT_EQ(r.status, b_.g.host(st));
}

TEST_F(RequestTest, GetId) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_GET_ID, 0), id = b_.g.alloc(kGetIdBytes), st = b_.status();
    const auto r = parse_ok(b_.walk({Seg{hdr, 16, false}, Seg{id, kGetIdBytes, true}, Seg{st, 1, true}}));
    EXPECT_EQ(r.type, uint32_t{VIRTIO_BLK_T_GET_ID});
    EXPECT_EQ(r.data_bytes, kGetIdBytes);
    EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{kGetIdBytes}));
}

TEST_F(RequestTest, DiscardWithOneRange) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_DISCARD, 0), rg = b_.g.alloc(16), st = b_.status();
    b_.put_range(rg, 100, 8, 0);
    const auto r = parse_ok(b_.walk({Seg{hdr, 16, false}, Seg{rg, 16, false}, Seg{st, 1, true}}));
    EXPECT_EQ(r.type, uint32_t{VIRTIO_BLK_T_DISCARD});
    EXPECT_EQ(r.data_bytes, 16u);
    ASSERT_EQ(r.ranges.size(), 1u);
    EXPECT_EQ(r.ranges[0].sector, 100u);
    EXPECT_EQ(r.ranges[0].num_sectors, 8u);
    EXPECT_EQ(r.ranges[0].flags, 0u);
    EXPECT_EQ(r.sector, 100u) << "the first range's sector, not the header's";
}

TEST_F(RequestTest, WriteZeroesWithTwoRangesSplitAcrossDescriptors) {
    // 32 bytes of ranges in descriptors of 20 and 12 bytes: the second range straddles them.
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_WRITE_ZEROES, 0), rg = b_.g.alloc(32), st = b_.status();
    b_.put_range(rg, 40, 16, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
    b_.put_range(rg + 16, 1000, 2, 0);
    const auto r = parse_ok(b_.walk({Seg{hdr, 16, false}, Seg{rg, 20, false}, Seg{rg + 20, 12, false}, Seg{st, 1, true}}));
    EXPECT_EQ(r.type, uint32_t{VIRTIO_BLK_T_WRITE_ZEROES});
    EXPECT_EQ(r.data_bytes, 32u);
    EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{20, 12}));
    ASSERT_EQ(r.ranges.size(), 2u);
    EXPECT_EQ(r.ranges[0].sector, 40u);
    EXPECT_EQ(r.ranges[0].num_sectors, 16u);
    EXPECT_EQ(r.ranges[0].flags, uint32_t{VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP});
    EXPECT_EQ(r.ranges[1].sector, 1000u);
    EXPECT_EQ(r.ranges[1].num_sectors, 2u);
    EXPECT_EQ(r.ranges[1].flags, 0u);
    EXPECT_EQ(r.sector, 40u);
}

TEST_F(RequestTest, HeaderSplitAcrossTwoDescriptors) {
    const uint64_t h0 = b_.g.alloc(8), h1 = b_.g.alloc(8), data = b_.g.alloc(512), st = b_.status();
    const uint32_t type = VIRTIO_BLK_T_OUT;
    const uint32_t ioprio = 5;
    const uint64_t sector = 0x1122334455ull;
    b_.g.put(h0, type);
    b_.g.put(h0 + 4, ioprio);
    b_.g.put(h1, sector);
    const auto r = parse_ok(b_.walk({Seg{h0, 8, false}, Seg{h1, 8, false}, Seg{data, 512, false}, Seg{st, 1, true}}));
    EXPECT_EQ(r.type, type);
    EXPECT_EQ(r.ioprio, ioprio);
    EXPECT_EQ(r.sector, sector);
    EXPECT_EQ(r.data_bytes, 512u);
    EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{512}));
}

TEST_F(RequestTest, HeaderSplitWithDataInItsSecondDescriptor) {
    // 10 header bytes, then 6 header bytes followed by 512 data bytes.
    const uint64_t h0 = b_.g.alloc(16), h1 = b_.g.alloc(6 + 512), st = b_.status();
    b_.put_header(h0, VIRTIO_BLK_T_OUT, 77);
    b_.g.write(h1, b_.g.host(h0) + 10, 6);
    const auto r = parse_ok(b_.walk({Seg{h0, 10, false}, Seg{h1, 6 + 512, false}, Seg{st, 1, true}}));
    EXPECT_EQ(r.sector, 77u);
    EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{512}));
    EXPECT_EQ(iovs(r), (std::vector<std::pair<void*, size_t>>{{b_.g.host(h1) + 6, 512}}));
}

TEST(RequestTwoRegions, HeaderCrossingRegionsIsReassembled) {
    BlkChains b(2);
    const uint64_t hdr = b.g.boundary() - 4, st = b.status();
    virtio_blk_outhdr h{};
    h.type = VIRTIO_BLK_T_FLUSH;
    h.sector = 0xabcdef;
    b.g.put(hdr, h);
    auto parsed = parse_request(b.walk({Seg{hdr, 16, false}, Seg{st, 1, true}}));
    ASSERT_TRUE(std::holds_alternative<Request>(parsed));
    EXPECT_EQ(std::get<Request>(parsed).type, uint32_t{VIRTIO_BLK_T_FLUSH});
    EXPECT_EQ(std::get<Request>(parsed).sector, 0xabcdefu);
}

TEST_F(RequestTest, HeaderShorterThan16Bytes) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, 0), st = b_.status();
    const auto e = parse_err(b_.walk({Seg{hdr, 12, false}, Seg{st, 1, true}}));
    EXPECT_EQ(e.kind, RequestErrorKind::header_too_short);
    EXPECT_EQ(e.status, b_.g.host(st)) << "an IOERR can still be reported";
    EXPECT_EQ(e.type, UINT32_MAX);
}

TEST_F(RequestTest, NoDeviceWritableByteAtAll) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, 0), data = b_.g.alloc(512), st = b_.status();
    // The would-be status byte is device-readable.
    const auto e = parse_err(b_.walk({Seg{hdr, 16, false}, Seg{data, 512, false}, Seg{st, 1, false}}));
    EXPECT_EQ(e.kind, RequestErrorKind::no_status_byte);
    EXPECT_EQ(e.status, nullptr);
}

TEST_F(RequestTest, OnlyZeroLengthWritableDescriptorsHaveNoStatusByte) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_FLUSH, 0), st = b_.status();
    const auto e = parse_err(b_.walk({Seg{hdr, 16, false}, Seg{st, 0, true}}));
    EXPECT_EQ(e.kind, RequestErrorKind::no_status_byte);
    EXPECT_EQ(e.status, nullptr);
}

TEST_F(RequestTest, TrailingEmptyWritableDescriptorDoesNotHideStatus) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_FLUSH, 0), st = b_.status(), empty = b_.g.alloc(1);
    const auto r = parse_ok(b_.walk({Seg{hdr, 16, false}, Seg{st, 1, true}, Seg{empty, 0, true}}));
    EXPECT_EQ(r.status, b_.g.host(st));
    EXPECT_EQ(r.data_bytes, 0u);
}

TEST_F(RequestTest, ReadWithDeviceReadablePayloadIsWrongDirection) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, 12), extra = b_.g.alloc(512), data = b_.g.alloc(512), st = b_.status();
    const auto e = parse_err(b_.walk({Seg{hdr, 16, false}, Seg{extra, 512, false}, Seg{data, 512, true}, Seg{st, 1, true}}));
    EXPECT_EQ(e.kind, RequestErrorKind::wrong_direction);
    EXPECT_EQ(e.type, uint32_t{VIRTIO_BLK_T_IN});
    EXPECT_EQ(e.sector, 12u);
    EXPECT_EQ(e.status, b_.g.host(st));
}

TEST_F(RequestTest, WriteWithDeviceWritablePayloadIsWrongDirection) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, 0), data = b_.g.alloc(512), st = b_.status();
    const auto e = parse_err(b_.walk({Seg{hdr, 16, false}, Seg{data, 512, true}, Seg{st, 1, true}}));
    EXPECT_EQ(e.kind, RequestErrorKind::wrong_direction);
    EXPECT_EQ(e.type, uint32_t{VIRTIO_BLK_T_OUT});
    EXPECT_EQ(e.status, b_.g.host(st));
}

TEST_F(RequestTest, DiscardPayloadNotWholeSegments) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_DISCARD, 0), rg = b_.g.alloc(24), st = b_.status();
    const auto e = parse_err(b_.walk({Seg{hdr, 16, false}, Seg{rg, 24, false}, Seg{st, 1, true}}));
    EXPECT_EQ(e.kind, RequestErrorKind::bad_ranges);
    EXPECT_EQ(e.type, uint32_t{VIRTIO_BLK_T_DISCARD});
    EXPECT_EQ(e.status, b_.g.host(st));
}

TEST_F(RequestTest, WriteZeroesWithoutRanges) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_WRITE_ZEROES, 0), st = b_.status();
    const auto e = parse_err(b_.walk({Seg{hdr, 16, false}, Seg{st, 1, true}}));
    EXPECT_EQ(e.kind, RequestErrorKind::bad_ranges);
}

TEST_F(RequestTest, ParsingWritesNothingToGuestMemory) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, 0), data = b_.g.alloc(512), st = b_.status();
    const auto chain = b_.walk({Seg{hdr, 16, false}, Seg{data, 512, true}, Seg{st, 1, true}});
    const auto before = b_.g.snapshot();
    (void)parse_request(chain);
    EXPECT_TRUE(b_.g.snapshot() == before);
}


}  // namespace
}  // namespace blkrig::blk
