// virtio::walk_chain over fake guest memory: well-formed chains map to the
// right buffers and iovecs; each malformed chain is refused with the exact
// error kind and position, and without touching guest memory.
#include "fake_guest.hpp"

#include "virtio/chain.hpp"
#include "virtio/split_ring.hpp"

#include <gtest/gtest.h>

#include <variant>

namespace blkrig::virtio {
namespace {

using test::FakeGuest;
using Seg = FakeGuest::Seg;

constexpr uint16_t kQueueSize = 16;

class ChainTest : public ::testing::Test {
protected:
    ChainTest() : ChainTest(1) {}
    explicit ChainTest(int regions) : g_(regions), table_(g_.alloc(desc_table_bytes(kQueueSize))) {}

    std::variant<DescriptorChain, ChainError> walk(uint16_t head, bool indirect = true) {
        return walk_chain(g_.table(table_, kQueueSize), kQueueSize, head, g_.mem(), indirect);
    }

    DescriptorChain walk_ok(uint16_t head, bool indirect = true) {
        auto r = walk(head, indirect);
        if (auto* e = std::get_if<ChainError>(&r)) {
            ADD_FAILURE() << "unexpected chain error: " << e->message();
            return {};
        }
        return std::get<DescriptorChain>(std::move(r));
    }

    // A refused chain must report exactly this, and leave guest memory as it was.
    void expect_error(uint16_t head, ChainErrorKind kind, uint16_t desc, bool in_indirect, bool indirect = true) {
        const auto before = g_.snapshot();
        auto r = walk(head, indirect);
        ASSERT_TRUE(std::holds_alternative<ChainError>(r)) << "chain was accepted";
        const auto& e = std::get<ChainError>(r);
        EXPECT_EQ(e.kind, kind) << e.message();
        EXPECT_EQ(e.head, head) << e.message();
        EXPECT_EQ(e.desc, desc) << e.message();
        EXPECT_EQ(e.in_indirect, in_indirect) << e.message();
        EXPECT_FALSE(e.message().empty());
        EXPECT_TRUE(g_.snapshot() == before) << "a failed walk wrote to guest memory";
    }

    // Checks one buffer and its single iovec.
    void expect_buffer(const DescriptorChain& c, size_t i, uint64_t gpa, uint32_t len, bool writable) {
        ASSERT_LT(i, c.buffers.size());
        const Buffer& b = c.buffers[i];
        EXPECT_EQ(b.gpa, gpa) << "buffer " << i;
        EXPECT_EQ(b.len, len) << "buffer " << i;
        EXPECT_EQ(b.device_writable, writable) << "buffer " << i;
        ASSERT_EQ(b.n_iov, 1u) << "buffer " << i;
        ASSERT_LT(b.first_iov, c.iov.size());
        EXPECT_EQ(c.iov[b.first_iov].iov_base, g_.host(gpa, len)) << "buffer " << i;
        EXPECT_EQ(c.iov[b.first_iov].iov_len, len) << "buffer " << i;
    }

    FakeGuest g_;
    uint64_t table_;
};

class TwoRegionChainTest : public ChainTest {
protected:
    TwoRegionChainTest() : ChainTest(2) {}
};

// --- well-formed chains -----------------------------------------------------

TEST_F(ChainTest, TwoDescriptorsHeaderAndDataReadableStatusWritable) {
    const uint64_t hdr = g_.alloc(16 + 512), st = g_.alloc(1);
    const uint16_t head = g_.link(table_, 0, {Seg{hdr, 16 + 512, false}, Seg{st, 1, true}});
    const auto c = walk_ok(head);
    EXPECT_EQ(c.head, head);
    ASSERT_EQ(c.buffers.size(), 2u);
    EXPECT_EQ(c.iov.size(), 2u);
    expect_buffer(c, 0, hdr, 16 + 512, false);
    expect_buffer(c, 1, st, 1, true);
    EXPECT_EQ(c.readable_bytes, 16u + 512u);
    EXPECT_EQ(c.writable_bytes, 1u);
}

TEST_F(ChainTest, ThreeDescriptorsDeviceWritableData) {
    const uint64_t hdr = g_.alloc(16), data = g_.alloc(4096), st = g_.alloc(1);
    const uint16_t head = g_.link(table_, 3, {Seg{hdr, 16, false}, Seg{data, 4096, true}, Seg{st, 1, true}});
    const auto c = walk_ok(head);
    EXPECT_EQ(c.head, 3);
    ASSERT_EQ(c.buffers.size(), 3u);
    expect_buffer(c, 0, hdr, 16, false);
    expect_buffer(c, 1, data, 4096, true);
    expect_buffer(c, 2, st, 1, true);
    EXPECT_EQ(c.readable_bytes, 16u);
    EXPECT_EQ(c.writable_bytes, 4097u);
}

TEST_F(ChainTest, ThreeDescriptorsDeviceReadableDataInAnyTableOrder) {
    const uint64_t hdr = g_.alloc(16), data = g_.alloc(4096), st = g_.alloc(1);
    // The chain order is the NEXT links, not the table order.
    const uint16_t idx[] = {9, 2, 14};
    const Seg segs[] = {{hdr, 16, false}, {data, 4096, false}, {st, 1, true}};
    g_.link(table_, idx, segs);
    const auto c = walk_ok(9);
    EXPECT_EQ(c.head, 9);
    ASSERT_EQ(c.buffers.size(), 3u);
    expect_buffer(c, 0, hdr, 16, false);
    expect_buffer(c, 1, data, 4096, false);
    expect_buffer(c, 2, st, 1, true);
    EXPECT_EQ(c.readable_bytes, 16u + 4096u);
    EXPECT_EQ(c.writable_bytes, 1u);
}

TEST_F(ChainTest, HeaderEightDataSegmentsAndStatus) {
    std::vector<Seg> segs{{g_.alloc(16), 16, false}};
    for (uint32_t i = 0; i < 8; ++i) segs.push_back({g_.alloc(512 * (i + 1)), 512 * (i + 1), false});
    segs.push_back({g_.alloc(1), 1, true});
    std::vector<uint16_t> idx;
    for (uint16_t i = 0; i < segs.size(); ++i) idx.push_back(static_cast<uint16_t>(i + 5));
    g_.link(table_, idx, segs);

    const auto c = walk_ok(5);
    ASSERT_EQ(c.buffers.size(), 10u);
    EXPECT_EQ(c.iov.size(), 10u);
    uint64_t readable = 0;
    for (size_t i = 0; i < segs.size(); ++i) {
        expect_buffer(c, i, segs[i].gpa, segs[i].len, segs[i].writable);
        if (!segs[i].writable) readable += segs[i].len;
    }
    EXPECT_EQ(c.readable_bytes, readable);
    EXPECT_EQ(c.writable_bytes, 1u);
}

TEST_F(ChainTest, ChainUsingEveryTableEntryIsNotALoop) {
    std::vector<Seg> segs;
    std::vector<uint16_t> idx;
    for (uint16_t i = 0; i < kQueueSize; ++i) {
        segs.push_back({g_.alloc(16), 16, i + 1 == kQueueSize});
        idx.push_back(static_cast<uint16_t>(kQueueSize - 1 - i));
    }
    g_.link(table_, idx, segs);
    const auto c = walk_ok(kQueueSize - 1);
    EXPECT_EQ(c.buffers.size(), kQueueSize);
}

TEST_F(ChainTest, IndirectTableOnly) {
    const uint64_t hdr = g_.alloc(16), data = g_.alloc(2048), st = g_.alloc(1);
    const uint64_t ind = g_.alloc(3 * 16);
    g_.link(ind, 0, {Seg{hdr, 16, false}, Seg{data, 2048, true}, Seg{st, 1, true}});
    g_.set_desc(table_, 7, ind, 3 * 16, kDescFIndirect);

    const auto c = walk_ok(7);
    EXPECT_EQ(c.head, 7);
    ASSERT_EQ(c.buffers.size(), 3u);
    expect_buffer(c, 0, hdr, 16, false);
    expect_buffer(c, 1, data, 2048, true);
    expect_buffer(c, 2, st, 1, true);
    EXPECT_EQ(c.readable_bytes, 16u);
    EXPECT_EQ(c.writable_bytes, 2049u);
}

TEST_F(ChainTest, DirectDescriptorsBeforeIndirectTableAreKept) {
    const uint64_t hdr = g_.alloc(16), data = g_.alloc(1024), st = g_.alloc(1);
    // Direct: header at 4 -> indirect descriptor at 1. The indirect walk
    // starts at entry 0 and follows its own indices (0 -> 3).
    g_.set_desc(table_, 4, hdr, 16, kDescFNext, 1);
    const uint64_t ind = g_.alloc(4 * 16);
    g_.set_desc(table_, 1, ind, 4 * 16, kDescFIndirect);
    g_.set_desc(ind, 0, data, 1024, kDescFNext, 3);
    g_.set_desc(ind, 3, st, 1, kDescFWrite);

    const auto c = walk_ok(4);
    ASSERT_EQ(c.buffers.size(), 3u);
    expect_buffer(c, 0, hdr, 16, false);
    expect_buffer(c, 1, data, 1024, false);
    expect_buffer(c, 2, st, 1, true);
    EXPECT_EQ(c.readable_bytes, 16u + 1024u);
    EXPECT_EQ(c.writable_bytes, 1u);
}

TEST_F(TwoRegionChainTest, BufferCrossingRegionsIsSplitIntoTwoIovecs) {
    const uint64_t hdr = g_.alloc(16), st = g_.alloc(1);
    const uint64_t data = g_.boundary() - 256;  // 256 bytes in region 0, 768 in region 1
    g_.link(table_, 0, {Seg{hdr, 16, false}, Seg{data, 1024, true}, Seg{st, 1, true}});

    const auto c = walk_ok(0);
    ASSERT_EQ(c.buffers.size(), 3u);
    ASSERT_EQ(c.iov.size(), 4u);
    const Buffer& b = c.buffers[1];
    EXPECT_EQ(b.gpa, data);
    EXPECT_EQ(b.len, 1024u);
    EXPECT_EQ(b.first_iov, 1u);
    ASSERT_EQ(b.n_iov, 2u);
    EXPECT_EQ(c.iov[1].iov_base, g_.host(data, 256));
    EXPECT_EQ(c.iov[1].iov_len, 256u);
    EXPECT_EQ(c.iov[2].iov_base, g_.host(g_.boundary(), 768));
    EXPECT_EQ(c.iov[2].iov_len, 768u);
    // The status buffer's iovec follows the split one.
    EXPECT_EQ(c.buffers[2].first_iov, 3u);
    EXPECT_EQ(c.iov[3].iov_base, g_.host(st));
    EXPECT_EQ(c.writable_bytes, 1025u);
}

TEST_F(ChainTest, ZeroLengthBufferMapsToNoIovec) {
    const uint64_t hdr = g_.alloc(16), st = g_.alloc(1);
    g_.link(table_, 0, {Seg{hdr, 16, false}, Seg{g_.alloc(16), 0, false}, Seg{st, 1, true}});
    const auto c = walk_ok(0);
    ASSERT_EQ(c.buffers.size(), 3u);
    EXPECT_EQ(c.buffers[1].n_iov, 0u);
    EXPECT_EQ(c.iov.size(), 2u);
    EXPECT_EQ(c.buffers[2].first_iov, 1u);
}

// --- malformed chains -------------------------------------------------------

TEST_F(ChainTest, HeadOutOfRange) {
    expect_error(kQueueSize, ChainErrorKind::head_out_of_range, kQueueSize, false);
    expect_error(UINT16_MAX, ChainErrorKind::head_out_of_range, UINT16_MAX, false);
}

TEST_F(ChainTest, NextOutOfRange) {
    g_.set_desc(table_, 2, g_.alloc(16), 16, kDescFNext, 3);
    g_.set_desc(table_, 3, g_.alloc(16), 16, kDescFNext, kQueueSize);
    expect_error(2, ChainErrorKind::next_out_of_range, 3, false);
}

TEST_F(ChainTest, LoopInDirectTableIsChainTooLong) {
    // 0 -> 1 -> 1 -> ...: the head is not part of the loop.
    g_.set_desc(table_, 0, g_.alloc(16), 16, kDescFNext, 1);
    g_.set_desc(table_, 1, g_.alloc(16), 16, kDescFNext, 1);
    expect_error(0, ChainErrorKind::chain_too_long, 1, false);
}

TEST_F(ChainTest, LoopInsideIndirectTableIsChainTooLong) {
    const uint64_t ind = g_.alloc(4 * 16);
    g_.set_desc(ind, 0, g_.alloc(16), 16, kDescFNext, 2);
    g_.set_desc(ind, 2, g_.alloc(16), 16, kDescFNext, 2);
    g_.set_desc(table_, 6, ind, 4 * 16, kDescFIndirect);
    expect_error(6, ChainErrorKind::chain_too_long, 2, true);
}

TEST_F(ChainTest, NextOutOfRangeInsideIndirectTableUsesTableSize) {
    // next 5 is valid for the queue (16) but not for a 4-entry indirect table.
    const uint64_t ind = g_.alloc(4 * 16);
    g_.set_desc(ind, 0, g_.alloc(16), 16, kDescFNext, 1);
    g_.set_desc(ind, 1, g_.alloc(16), 16, kDescFNext, 5);
    g_.set_desc(table_, 0, ind, 4 * 16, kDescFIndirect);
    expect_error(0, ChainErrorKind::next_out_of_range, 1, true);
}

TEST_F(ChainTest, IndirectInsideIndirectIsNested) {
    const uint64_t inner = g_.alloc(2 * 16);
    g_.link(inner, 0, {Seg{g_.alloc(16), 16, false}, Seg{g_.alloc(1), 1, true}});
    const uint64_t outer = g_.alloc(2 * 16);
    g_.set_desc(outer, 0, g_.alloc(16), 16, kDescFNext, 1);
    g_.set_desc(outer, 1, inner, 2 * 16, kDescFIndirect);
    g_.set_desc(table_, 5, outer, 2 * 16, kDescFIndirect);
    expect_error(5, ChainErrorKind::nested_indirect, 1, true);
}

TEST_F(ChainTest, IndirectWhenNotNegotiated) {
    const uint64_t ind = g_.alloc(2 * 16);
    g_.link(ind, 0, {Seg{g_.alloc(16), 16, false}, Seg{g_.alloc(1), 1, true}});
    g_.set_desc(table_, 0, g_.alloc(16), 16, kDescFNext, 8);
    g_.set_desc(table_, 8, ind, 2 * 16, kDescFIndirect);
    expect_error(0, ChainErrorKind::indirect_not_negotiated, 8, false, /*indirect=*/false);
}

TEST_F(ChainTest, IndirectWithNext) {
    const uint64_t ind = g_.alloc(2 * 16);
    g_.link(ind, 0, {Seg{g_.alloc(16), 16, false}, Seg{g_.alloc(1), 1, true}});
    g_.set_desc(table_, 3, ind, 2 * 16, kDescFIndirect | kDescFNext, 4);
    g_.set_desc(table_, 4, g_.alloc(1), 1, kDescFWrite);
    expect_error(3, ChainErrorKind::indirect_with_next, 3, false);
}

TEST_F(ChainTest, IndirectLengthZero) {
    g_.set_desc(table_, 1, g_.alloc(32), 0, kDescFIndirect);
    expect_error(1, ChainErrorKind::indirect_bad_length, 1, false);
}

TEST_F(ChainTest, IndirectLengthNotMultipleOf16) {
    g_.set_desc(table_, 1, g_.alloc(32), 24, kDescFIndirect);
    expect_error(1, ChainErrorKind::indirect_bad_length, 1, false);
}

// A table's length alone can ask for 2^28 entries: past the bound it is
// refused before anything is mapped; at the bound it is walked.
TEST_F(ChainTest, IndirectTableLongerThanTheBound) {
    const uint64_t big = g_.alloc((kMaxIndirectEntries + 1) * 16);
    g_.set_desc(big, 0, g_.alloc(16), 16, kDescFWrite);
    g_.set_desc(table_, 3, big, kMaxIndirectEntries * 16, kDescFIndirect);
    EXPECT_EQ(walk_ok(3).buffers.size(), 1u);
    g_.set_desc(table_, 3, big, (kMaxIndirectEntries + 1) * 16, kDescFIndirect);
    expect_error(3, ChainErrorKind::indirect_too_long, 3, false);
    g_.set_desc(table_, 3, g_.end() + 0x1000, 0xfffffff0u, kDescFIndirect);
    expect_error(3, ChainErrorKind::indirect_too_long, 3, false);
}

TEST_F(ChainTest, IndirectTableUnmapped) {
    g_.set_desc(table_, 2, g_.end() + 0x1000, 32, kDescFIndirect);
    expect_error(2, ChainErrorKind::indirect_unmapped, 2, false);
}

TEST_F(ChainTest, IndirectTableRunningPastEndOfMemory) {
    g_.set_desc(table_, 2, g_.end() - 16, 32, kDescFIndirect);
    expect_error(2, ChainErrorKind::indirect_unmapped, 2, false);
}

TEST_F(ChainTest, BufferOutsideMemory) {
    g_.set_desc(table_, 0, g_.alloc(16), 16, kDescFNext, 1);
    g_.set_desc(table_, 1, FakeGuest::kBase - 0x800, 512, kDescFNext, 2);  // below the first region
    g_.set_desc(table_, 2, g_.alloc(1), 1, kDescFWrite);
    expect_error(0, ChainErrorKind::buffer_unmapped, 1, false);
}

TEST_F(ChainTest, BufferRunningPastEndOfMemory) {
    g_.set_desc(table_, 0, g_.alloc(16), 16, kDescFNext, 1);
    g_.set_desc(table_, 1, g_.end() - 100, 512, kDescFWrite);
    expect_error(0, ChainErrorKind::buffer_unmapped, 1, false);
}

TEST_F(ChainTest, BufferInIndirectTableOutsideMemory) {
    const uint64_t ind = g_.alloc(2 * 16);
    g_.set_desc(ind, 0, g_.alloc(16), 16, kDescFNext, 1);
    g_.set_desc(ind, 1, 0x4000'0000, 1, kDescFWrite);
    g_.set_desc(table_, 0, ind, 2 * 16, kDescFIndirect);
    expect_error(0, ChainErrorKind::buffer_unmapped, 1, true);
}

TEST_F(ChainTest, AddressPlusLengthOverflows) {
    g_.set_desc(table_, 0, g_.alloc(16), 16, kDescFNext, 1);
    g_.set_desc(table_, 1, UINT64_MAX - 15, 512, kDescFWrite);
    expect_error(0, ChainErrorKind::length_overflow, 1, false);
}

TEST_F(ChainTest, ReadableAfterWritable) {
    const uint64_t hdr = g_.alloc(16), st = g_.alloc(1), data = g_.alloc(512);
    g_.link(table_, 0, {Seg{hdr, 16, false}, Seg{st, 1, true}, Seg{data, 512, false}});
    expect_error(0, ChainErrorKind::readable_after_writable, 2, false);
}

TEST_F(ChainTest, ReadableAfterWritableAcrossIndirectBoundary) {
    // The direct part ends writable; the indirect table then starts readable.
    const uint64_t ind = g_.alloc(2 * 16);
    g_.link(ind, 0, {Seg{g_.alloc(16), 16, false}, Seg{g_.alloc(1), 1, true}});
    g_.set_desc(table_, 0, g_.alloc(64), 64, kDescFWrite | kDescFNext, 1);
    g_.set_desc(table_, 1, ind, 2 * 16, kDescFIndirect);
    expect_error(0, ChainErrorKind::readable_after_writable, 0, true);
}

TEST(ChainErrorText, EveryKindHasADistinctDescription) {
    const ChainErrorKind kinds[] = {
        ChainErrorKind::head_out_of_range,   ChainErrorKind::next_out_of_range,       ChainErrorKind::chain_too_long,
        ChainErrorKind::nested_indirect,     ChainErrorKind::indirect_not_negotiated, ChainErrorKind::indirect_with_next,
        ChainErrorKind::indirect_bad_length, ChainErrorKind::indirect_unmapped,       ChainErrorKind::buffer_unmapped,
        ChainErrorKind::length_overflow,     ChainErrorKind::readable_after_writable, ChainErrorKind::indirect_too_long,
    };
    std::vector<std::string> seen;
    for (auto k : kinds) {
        const std::string s = to_string(k);
        EXPECT_NE(s, "unknown chain error");
        for (const auto& other : seen) EXPECT_NE(s, other);
        seen.push_back(s);
    }
    const ChainError e{ChainErrorKind::nested_indirect, 3, 1, true, "detail"};
    EXPECT_EQ(e.message(),
              "descriptor chain head 3: indirect descriptor inside an indirect table at indirect descriptor 1: detail");
}

}  // namespace
}  // namespace blkrig::virtio
