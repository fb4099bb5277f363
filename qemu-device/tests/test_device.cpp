// blk::BlkDevice::process against a RAM store: what each request does to
// the store and to guest memory, the status it reports, used_len, and the
// trace record it leaves.
#include "blk_chain.hpp"
#include "common/temp_dir.hpp"

#include "blk/device.hpp"
#include "blk/markers.hpp"
#include "common/log.hpp"
#include "store/store.hpp"
#include "trace/reader.hpp"
#include "trace/writer.hpp"

#include <gtest/gtest.h>

#include <fstream>

namespace blkrig::blk {
namespace {

using test::BlkChains;
using Seg = test::FakeGuest::Seg;

constexpr uint64_t kCapacity = 2048;  // sectors: 1 MiB
constexpr uint64_t bit(int n) { return 1ull << n; }

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + i / 251);
    return v;
}

Geometry geometry() {
    Geometry g;
    g.capacity_sectors = kCapacity;
    g.serial = "blkrig-unit-serial";
    return g;
}

class DeviceTest : public ::testing::Test {
protected:
    explicit DeviceTest(Geometry geo = geometry())
        : store_(store::make_ram(geo.capacity_sectors * kSectorSize)), dev_(geo, *store_, nullptr) {
        dev_.set_features(dev_.features());
    }

    virtio::Completion run(std::initializer_list<Seg> segs) {
        virtio::Completion c;
        dev_.process(b_.walk(segs), c);
        return c;
    }

    void store_put(uint64_t offset, const std::vector<uint8_t>& bytes) {
        const iovec v{const_cast<uint8_t*>(bytes.data()), bytes.size()};
        ASSERT_EQ(store_->write(offset, std::span(&v, 1)), 0);
    }
    std::vector<uint8_t> store_get(uint64_t offset, size_t len) {
        std::vector<uint8_t> out(len);
        const iovec v{out.data(), len};
        EXPECT_EQ(store_->read(offset, std::span(&v, 1)), 0);
        return out;
    }
    uint8_t status_at(uint64_t gpa) const { return b_.g.get<uint8_t>(gpa); }

    BlkChains b_;
    std::unique_ptr<store::Store> store_;
    BlkDevice dev_;
};

TEST_F(DeviceTest, ReadReturnsStoreContents) {
    const auto want = pattern(1536, 3);
    store_put(4 * kSectorSize, want);
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, 4), d0 = b_.g.alloc(512), d1 = b_.g.alloc(1024), st = b_.status();
    const auto c = run({Seg{hdr, 16, false}, Seg{d0, 512, true}, Seg{d1, 1024, true}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(c.used_len, 1536u + 1);
    auto got = b_.g.bytes(d0, 512);
    const auto tail = b_.g.bytes(d1, 1024);
    got.insert(got.end(), tail.begin(), tail.end());
    EXPECT_TRUE(got == want);
}

TEST_F(DeviceTest, ReadOfLastSectorSucceeds) {
    store_put((kCapacity - 1) * kSectorSize, pattern(512, 9));
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, kCapacity - 1), d = b_.g.alloc(512), st = b_.status();
    const auto c = run({Seg{hdr, 16, false}, Seg{d, 512, true}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(c.used_len, 513u);
    EXPECT_TRUE(b_.g.bytes(d, 512) == pattern(512, 9));
}

TEST_F(DeviceTest, WriteLandsInStore) {
    const auto a = pattern(512, 1), b = pattern(2048, 2);
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, 10), d0 = b_.g.alloc(512), d1 = b_.g.alloc(2048), st = b_.status();
    b_.g.write(d0, a.data(), a.size());
    b_.g.write(d1, b.data(), b.size());
    const auto c = run({Seg{hdr, 16, false}, Seg{d0, 512, false}, Seg{d1, 2048, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(c.used_len, 1u);
    EXPECT_TRUE(store_get(10 * kSectorSize, 512) == a);
    EXPECT_TRUE(store_get(11 * kSectorSize, 2048) == b);
    EXPECT_TRUE(store_get(9 * kSectorSize, 512) == std::vector<uint8_t>(512, 0)) << "write spilled before its range";
    EXPECT_TRUE(store_get(15 * kSectorSize, 512) == std::vector<uint8_t>(512, 0)) << "write spilled after its range";
}

TEST_F(DeviceTest, WriteThroughHeaderDescriptorPayload) {
    // Header and data share one descriptor (legacy drivers do this).
    const auto a = pattern(512, 4);
    const uint64_t hdr = b_.g.alloc(16 + 512), st = b_.status();
    b_.put_header(hdr, VIRTIO_BLK_T_OUT, 0);
    b_.g.write(hdr + 16, a.data(), a.size());
    run({Seg{hdr, 16 + 512, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_OK);
    EXPECT_TRUE(store_get(0, 512) == a);
}

TEST_F(DeviceTest, ReadPastCapacityIsIoerrAndLeavesBufferAlone) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, kCapacity - 1), d = b_.g.alloc(1024), st = b_.status();
    b_.g.fill(d, 0xaa, 1024);
    const auto c = run({Seg{hdr, 16, false}, Seg{d, 1024, true}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(c.used_len, 1u);
    EXPECT_TRUE(b_.g.bytes(d, 1024) == std::vector<uint8_t>(1024, 0xaa));
}

TEST_F(DeviceTest, WritePastCapacityIsIoerrAndLeavesStoreUntouched) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, kCapacity - 1), d = b_.g.alloc(1024), st = b_.status();
    b_.g.fill(d, 0x5a, 1024);
    const auto c = run({Seg{hdr, 16, false}, Seg{d, 1024, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(c.used_len, 1u);
    EXPECT_TRUE(store_get(0, kCapacity * kSectorSize) == std::vector<uint8_t>(kCapacity * kSectorSize, 0));
}

TEST_F(DeviceTest, StartSectorPastCapacityIsIoerr) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, kCapacity + 1), d = b_.g.alloc(512), st = b_.status();
    run({Seg{hdr, 16, false}, Seg{d, 512, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_IOERR);
}

TEST_F(DeviceTest, SectorPlusLengthOverflowIsIoerr) {
    // sector * 512 and sector + sectors both wrap a uint64.
    for (const uint64_t sector : {UINT64_MAX, UINT64_MAX - 1, UINT64_MAX / kSectorSize + 1}) {
        const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, sector), d = b_.g.alloc(1024), st = b_.status();
        b_.g.fill(d, 0x77, 1024);
        run({Seg{hdr, 16, false}, Seg{d, 1024, false}, Seg{st, 1, true}});
        EXPECT_EQ(status_at(st), VIRTIO_BLK_S_IOERR) << "sector " << sector;
    }
    EXPECT_TRUE(store_get(0, kCapacity * kSectorSize) == std::vector<uint8_t>(kCapacity * kSectorSize, 0));
}

TEST_F(DeviceTest, LengthNotMultipleOf512IsIoerr) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, 0), d = b_.g.alloc(700), st = b_.status();
    b_.g.fill(d, 0x11, 700);
    run({Seg{hdr, 16, false}, Seg{d, 700, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_IOERR);
    EXPECT_TRUE(store_get(0, 1024) == std::vector<uint8_t>(1024, 0));

    const uint64_t rh = b_.header(VIRTIO_BLK_T_IN, 0), rd = b_.g.alloc(100), rst = b_.status();
    const auto c = run({Seg{rh, 16, false}, Seg{rd, 100, true}, Seg{rst, 1, true}});
    EXPECT_EQ(status_at(rst), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(c.used_len, 1u);
}

TEST_F(DeviceTest, UnknownTypeIsUnsupported) {
    const uint64_t hdr = b_.header(99, 0), st = b_.status();
    const auto c = run({Seg{hdr, 16, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_UNSUPP);
    EXPECT_EQ(c.used_len, 1u);
    EXPECT_EQ(c.record.type, 99u);
    EXPECT_EQ(c.record.status, trace::kStatusUnsupp);
}

TEST_F(DeviceTest, FlushWhenNegotiatedSucceeds) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_FLUSH, 0), st = b_.status();
    const auto c = run({Seg{hdr, 16, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(c.used_len, 1u);
}

TEST_F(DeviceTest, FlushNotNegotiatedIsUnsupported) {
    dev_.set_features(dev_.features() & ~bit(VIRTIO_BLK_F_FLUSH));
    EXPECT_FALSE(dev_.writeback()) << "without FLUSH the device must be write-through";
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_FLUSH, 0), st = b_.status();
    run({Seg{hdr, 16, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_UNSUPP);
}

TEST_F(DeviceTest, GetIdReturnsSerialZeroPadded) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_GET_ID, 0), id = b_.g.alloc(kGetIdBytes), st = b_.status();
    b_.g.fill(id, 0xff, kGetIdBytes);
    const auto c = run({Seg{hdr, 16, false}, Seg{id, kGetIdBytes, true}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(c.used_len, kGetIdBytes + 1);
    std::vector<uint8_t> want(kGetIdBytes, 0);
    const std::string serial = "blkrig-unit-serial";
    std::copy(serial.begin(), serial.end(), want.begin());
    EXPECT_TRUE(b_.g.bytes(id, kGetIdBytes) == want);
}

TEST(DeviceGetId, LongSerialIsCutTo20BytesAndSplitBuffersAreFilled) {
    Geometry geo = geometry();
    geo.serial = "0123456789abcdefghijKLMNOP";
    auto store = store::make_ram(kCapacity * kSectorSize);
    BlkDevice dev(geo, *store, nullptr);
    dev.set_features(dev.features());
    BlkChains b;
    const uint64_t hdr = b.header(VIRTIO_BLK_T_GET_ID, 0), i0 = b.g.alloc(7), i1 = b.g.alloc(13), st = b.status();
    virtio::Completion c;
    dev.process(b.walk({Seg{hdr, 16, false}, Seg{i0, 7, true}, Seg{i1, 13, true}, Seg{st, 1, true}}), c);
    EXPECT_EQ(b.g.get<uint8_t>(st), VIRTIO_BLK_S_OK);
    auto got = b.g.bytes(i0, 7);
    const auto rest = b.g.bytes(i1, 13);
    got.insert(got.end(), rest.begin(), rest.end());
    EXPECT_EQ(std::string(got.begin(), got.end()), "0123456789abcdefghij");
}

TEST_F(DeviceTest, DiscardWithUnmapFlagIsUnsupported) {
    store_put(0, pattern(4096, 5));
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_DISCARD, 0), rg = b_.g.alloc(16), st = b_.status();
    b_.put_range(rg, 0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
    const auto c = run({Seg{hdr, 16, false}, Seg{rg, 16, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_UNSUPP);
    EXPECT_EQ(c.used_len, 1u);
    EXPECT_TRUE(store_get(0, 4096) == pattern(4096, 5));
}

TEST_F(DeviceTest, DiscardSucceeds) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_DISCARD, 0), rg = b_.g.alloc(16), st = b_.status();
    b_.put_range(rg, 16, 8, 0);
    run({Seg{hdr, 16, false}, Seg{rg, 16, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_OK);
}

TEST_F(DeviceTest, DiscardNotNegotiatedIsUnsupported) {
    dev_.set_features(dev_.features() & ~bit(VIRTIO_BLK_F_DISCARD));
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_DISCARD, 0), rg = b_.g.alloc(16), st = b_.status();
    b_.put_range(rg, 16, 8, 0);
    run({Seg{hdr, 16, false}, Seg{rg, 16, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_UNSUPP);
}

TEST_F(DeviceTest, WriteZeroesZeroesOnlyItsRange) {
    store_put(0, pattern(16 * kSectorSize, 6));
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_WRITE_ZEROES, 0), rg = b_.g.alloc(16), st = b_.status();
    b_.put_range(rg, 4, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
    const auto c = run({Seg{hdr, 16, false}, Seg{rg, 16, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(c.used_len, 1u);
    auto want = pattern(16 * kSectorSize, 6);
    std::fill(want.begin() + 4 * kSectorSize, want.begin() + 12 * kSectorSize, 0);
    EXPECT_TRUE(store_get(0, 16 * kSectorSize) == want);
}

TEST_F(DeviceTest, WriteZeroesPastCapacityIsIoerr) {
    store_put((kCapacity - 8) * kSectorSize, pattern(8 * kSectorSize, 8));
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_WRITE_ZEROES, 0), rg = b_.g.alloc(16), st = b_.status();
    b_.put_range(rg, kCapacity - 4, 8, 0);
    run({Seg{hdr, 16, false}, Seg{rg, 16, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_IOERR);
    EXPECT_TRUE(store_get((kCapacity - 8) * kSectorSize, 8 * kSectorSize) == pattern(8 * kSectorSize, 8));
}

TEST_F(DeviceTest, MoreRangesThanAdvertisedIsUnsupported) {
    // The default geometry advertises max_write_zeroes_seg 1.
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_WRITE_ZEROES, 0), rg = b_.g.alloc(32), st = b_.status();
    b_.put_range(rg, 0, 1, 0);
    b_.put_range(rg + 16, 8, 1, 0);
    run({Seg{hdr, 16, false}, Seg{rg, 32, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_UNSUPP);
}

TEST_F(DeviceTest, MalformedHeaderWritesIoerrAndFlagsTheRecord) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, 0), st = b_.status();
    const auto c = run({Seg{hdr, 8, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(c.used_len, 1u);
    EXPECT_TRUE(c.record.flags & trace::kReqMalformed);
    EXPECT_EQ(c.record.status, trace::kStatusIoErr);
    EXPECT_EQ(c.record.type, trace::kTypeUnknown);
}

TEST_F(DeviceTest, WrongDirectionIsMalformedWithKnownType) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, 33), d = b_.g.alloc(512), st = b_.status();
    const auto c = run({Seg{hdr, 16, false}, Seg{d, 512, true}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_IOERR);
    EXPECT_TRUE(c.record.flags & trace::kReqMalformed);
    EXPECT_EQ(c.record.type, uint32_t{VIRTIO_BLK_T_OUT});
    EXPECT_EQ(c.record.sector, 33u);
    EXPECT_TRUE(store_get(33 * kSectorSize, 512) == std::vector<uint8_t>(512, 0));
}

TEST_F(DeviceTest, NoStatusByteReportsNothing) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, 0), d = b_.g.alloc(512);
    const auto chain = b_.walk({Seg{hdr, 16, false}, Seg{d, 512, false}});
    const auto before = b_.g.snapshot();
    virtio::Completion c;
    dev_.process(chain, c);
    EXPECT_EQ(c.used_len, 0u);
    EXPECT_TRUE(c.record.flags & trace::kReqMalformed);
    EXPECT_EQ(c.record.status, trace::kStatusNone);
    EXPECT_TRUE(b_.g.snapshot() == before);
}

TEST_F(DeviceTest, CompletionRecordForWrite) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, 20), d0 = b_.g.alloc(512), d1 = b_.g.alloc(1024), d2 = b_.g.alloc(512),
                   st = b_.status();
    virtio::Completion c;
    c.record.seq = 41;
    c.record.queue = 2;
    c.record.head = 5;
    dev_.process(b_.walk({Seg{hdr, 16, false}, Seg{d0, 512, false}, Seg{d1, 1024, false}, Seg{d2, 512, false}, Seg{st, 1, true}}),
                 c);
    const auto& r = c.record;
    EXPECT_EQ(r.type, uint32_t{VIRTIO_BLK_T_OUT});
    EXPECT_EQ(r.sector, 20u);
    EXPECT_EQ(r.bytes, 2048u);
    EXPECT_EQ(r.nsegs, 3u);
    EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{512, 1024, 512}));
    EXPECT_EQ(r.status, trace::kStatusOk);
    EXPECT_EQ(r.flags, 0u);
    // Fields owned by the queue are left as they were.
    EXPECT_EQ(r.seq, 41u);
    EXPECT_EQ(r.queue, 2u);
    EXPECT_EQ(r.head, 5u);
}

TEST_F(DeviceTest, CompletionRecordForFailedRead) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, kCapacity), d = b_.g.alloc(4096), st = b_.status();
    const auto c = run({Seg{hdr, 16, false}, Seg{d, 4096, true}, Seg{st, 1, true}});
    EXPECT_EQ(c.record.type, uint32_t{VIRTIO_BLK_T_IN});
    EXPECT_EQ(c.record.sector, kCapacity);
    EXPECT_EQ(c.record.bytes, 4096u);
    EXPECT_EQ(c.record.nsegs, 1u);
    EXPECT_EQ(c.record.status, trace::kStatusIoErr);
    EXPECT_EQ(c.used_len, 1u);
}

TEST_F(DeviceTest, CompletionRecordForWriteZeroesCountsSectorsCovered) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_WRITE_ZEROES, 0), rg = b_.g.alloc(16), st = b_.status();
    b_.put_range(rg, 100, 64, 0);
    const auto c = run({Seg{hdr, 16, false}, Seg{rg, 16, false}, Seg{st, 1, true}});
    EXPECT_EQ(c.record.type, uint32_t{VIRTIO_BLK_T_WRITE_ZEROES});
    EXPECT_EQ(c.record.sector, 100u);
    EXPECT_EQ(c.record.bytes, 64u * kSectorSize);
    EXPECT_EQ(c.record.nsegs, 1u);
    EXPECT_EQ(c.record.seg_lens, (std::vector<uint32_t>{64 * kSectorSize}));
    EXPECT_EQ(c.record.status, trace::kStatusOk);
}

class ReadOnlyDeviceTest : public DeviceTest {
protected:
    static Geometry ro() {
        Geometry g = geometry();
        g.read_only = true;
        return g;
    }
    ReadOnlyDeviceTest() : DeviceTest(ro()) {}
};

TEST_F(ReadOnlyDeviceTest, OffersRoAndNoDiscardOrWriteZeroes) {
    EXPECT_TRUE(dev_.features() & bit(VIRTIO_BLK_F_RO));
    EXPECT_FALSE(dev_.features() & bit(VIRTIO_BLK_F_DISCARD));
    EXPECT_FALSE(dev_.features() & bit(VIRTIO_BLK_F_WRITE_ZEROES));
}

TEST_F(ReadOnlyDeviceTest, WriteIsIoerrAndStoreUntouched) {
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_OUT, 0), d = b_.g.alloc(512), st = b_.status();
    b_.g.fill(d, 0x33, 512);
    const auto c = run({Seg{hdr, 16, false}, Seg{d, 512, false}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(c.used_len, 1u);
    EXPECT_TRUE(store_get(0, 512) == std::vector<uint8_t>(512, 0));
}

TEST_F(ReadOnlyDeviceTest, ReadStillWorks) {
    store_put(0, pattern(512, 12));
    const uint64_t hdr = b_.header(VIRTIO_BLK_T_IN, 0), d = b_.g.alloc(512), st = b_.status();
    run({Seg{hdr, 16, false}, Seg{d, 512, true}, Seg{st, 1, true}});
    EXPECT_EQ(status_at(st), VIRTIO_BLK_S_OK);
    EXPECT_TRUE(b_.g.bytes(d, 512) == pattern(512, 12));
}

TEST(DeviceFeatures, OffersVersion1IndirectAndEventIdx) {
    auto store = store::make_ram(kCapacity * kSectorSize);
    BlkDevice dev(geometry(), *store, nullptr);
    const uint64_t f = dev.features();
    EXPECT_TRUE(f & bit(virtio::kFVersion1));
    EXPECT_TRUE(f & bit(virtio::kFIndirectDesc));
    EXPECT_TRUE(f & bit(virtio::kFEventIdx));
    EXPECT_TRUE(f & bit(VIRTIO_BLK_F_FLUSH));
    EXPECT_FALSE(f & bit(VIRTIO_BLK_F_RO));
}

TEST(DeviceConfig, ReadConfigCarriesGeometryAndWceIsWritable) {
    Geometry geo = geometry();
    geo.num_queues = 3;
    auto store = store::make_ram(kCapacity * kSectorSize);
    BlkDevice dev(geo, *store, nullptr);
    dev.set_features(dev.features());
    virtio_blk_config cfg{};
    auto bytes = dev.read_config();
    ASSERT_EQ(bytes.size(), sizeof cfg);
    std::memcpy(&cfg, bytes.data(), sizeof cfg);
    EXPECT_EQ(cfg.capacity, kCapacity);
    EXPECT_EQ(cfg.num_queues, 3u);
    EXPECT_EQ(cfg.blk_size, 512u);
    EXPECT_EQ(cfg.wce, 1u);

    const uint8_t zero = 0;
    EXPECT_TRUE(dev.write_config(offsetof(virtio_blk_config, wce), std::span(&zero, 1)));
    EXPECT_FALSE(dev.writeback());
    bytes = dev.read_config();
    std::memcpy(&cfg, bytes.data(), sizeof cfg);
    EXPECT_EQ(cfg.wce, 0u);
    EXPECT_FALSE(dev.write_config(0, std::span(&zero, 1))) << "capacity is not writable";
}

TEST(DeviceTrace, CompletedRequestsReachTheTraceFile) {
    TempDir dir;
    const auto path = dir.file("t.trace");
    {
        auto store = store::make_ram(kCapacity * kSectorSize);
        trace::FileHeader fh{};
        fh.capacity_sectors = kCapacity;
        fh.logical_block_size = 512;
        fh.num_queues = 1;  // the reader checks each record's queue against it
        trace::Writer w(path, fh, "{}");
        BlkDevice dev(geometry(), *store, &w);
        dev.set_features(dev.features());
        BlkChains b;
        const uint64_t hdr = b.header(VIRTIO_BLK_T_OUT, 8), d = b.g.alloc(1024), st = b.status();
        virtio::Completion c;
        c.record.seq = dev.next_seq();
        dev.process(b.walk({Seg{hdr, 16, false}, Seg{d, 1024, false}, Seg{st, 1, true}}), c);
        dev.completed(c);
        dev.queue_broken(0, 7, "test breakage");
        w.close();
    }
    const auto t = trace::read_trace(path);
    EXPECT_TRUE(t.complete()) << t.incompleteness();
    ASSERT_EQ(t.requests.size(), 1u);
    EXPECT_EQ(t.requests[0].type, uint32_t{VIRTIO_BLK_T_OUT});
    EXPECT_EQ(t.requests[0].sector, 8u);
    EXPECT_EQ(t.requests[0].bytes, 1024u);
    EXPECT_EQ(t.requests[0].seg_lens, (std::vector<uint32_t>{1024}));
    ASSERT_EQ(t.events.size(), 1u);
    EXPECT_EQ(t.events[0].code, trace::EventCode::queue_broken);
    EXPECT_EQ(t.events[0].head, 7u);
    EXPECT_EQ(t.events[0].text, "test breakage");
}

// The io_uring engine: on a file store a plain read or write leaves
// process() in flight (Defer::io, status not yet written) and completes with
// its status and bytes when the queue reaps it, unless the page cache held
// it all (then it completes at once, like the synchronous path); a request a
// fault rule touches, the marker region and a device with a write log stay
// synchronous; a RAM store or use_async(false) gives a queue no engine.
struct AsyncFixture {
    TempDir dir;
    std::unique_ptr<store::Store> store;
    explicit AsyncFixture(bool direct = false) {
        const auto path = dir.file("disk.img");
        { std::ofstream(path, std::ios::binary).write(std::string(kCapacity * kSectorSize, '\0').data(), kCapacity * kSectorSize); }
        store = store::open_file(path, false, direct);
    }
};

// A guest address whose host address O_DIRECT can use.
uint64_t alloc_host_aligned(test::FakeGuest& g, uint64_t len) {
    const uint64_t at = g.alloc(len + 4096);
    const auto host = reinterpret_cast<uintptr_t>(g.host(at, 1));
    return at + (4096 - host % 4096) % 4096;
}

// O_DIRECT: no page cache, so every aligned transfer goes through the ring.
TEST(DeviceAsync, PlainReadsAndWritesCompleteWhenReaped) {
    std::unique_ptr<AsyncFixture> fp;
    try {
        fp = std::make_unique<AsyncFixture>(true);
    } catch (const store::StoreError& e) {
        GTEST_SKIP() << "O_DIRECT not available here: " << e.what();
    }
    AsyncFixture& f = *fp;
    const auto want = pattern(4096, 11);
    {
        const iovec v{const_cast<uint8_t*>(want.data()), want.size()};
        ASSERT_EQ(f.store->write(16 * kSectorSize, std::span(&v, 1)), 0);
    }
    BlkDevice dev(geometry(), *f.store, nullptr);
    dev.set_features(dev.features());
    auto exec = dev.async_exec(0, 8);
    ASSERT_TRUE(exec) << "a file store gives each queue an engine";
    BlkChains b;
    const uint64_t hdr = b.header(VIRTIO_BLK_T_IN, 16), d = alloc_host_aligned(b.g, 4096), st = b.status();
    virtio::Completion c;
    c.record.seq = 5;
    c.exec = exec.get();
    dev.process(b.walk({Seg{hdr, 16, false}, Seg{d, 4096, true}, Seg{st, 1, true}}), c);
    EXPECT_EQ(c.defer, virtio::Defer::io);
    EXPECT_EQ(b.g.get<uint8_t>(st), 0xee) << "the status is written when the I/O is done, not before";
    exec->hold(std::move(c));
    exec->submit();
    std::vector<virtio::Completion> done;
    exec->reap(done, true);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].record.seq, 5u);
    EXPECT_EQ(done[0].record.status, VIRTIO_BLK_S_OK);
    EXPECT_EQ(done[0].defer, virtio::Defer::none);
    EXPECT_EQ(done[0].used_len, 4096u + 1);
    EXPECT_EQ(b.g.get<uint8_t>(st), VIRTIO_BLK_S_OK);
    EXPECT_TRUE(b.g.bytes(d, 4096) == want);
    EXPECT_EQ(exec->in_flight(), 0u);

    // A write through the engine lands in the file.
    BlkChains w;
    const auto data = pattern(4096, 12);
    const uint64_t whdr = w.header(VIRTIO_BLK_T_OUT, 40), wd = alloc_host_aligned(w.g, 4096), wst = w.status();
    w.g.write(wd, data.data(), data.size());
    virtio::Completion wc;
    wc.record.seq = 6;
    wc.exec = exec.get();
    dev.process(w.walk({Seg{whdr, 16, false}, Seg{wd, 4096, false}, Seg{wst, 1, true}}), wc);
    ASSERT_EQ(wc.defer, virtio::Defer::io);
    exec->hold(std::move(wc));
    done.clear();
    exec->reap(done, true);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].used_len, 1u);
    EXPECT_EQ(w.g.get<uint8_t>(wst), VIRTIO_BLK_S_OK);
    std::vector<uint8_t> back(4096);
    const iovec bv{back.data(), back.size()};
    ASSERT_EQ(f.store->read(40 * kSectorSize, std::span(&bv, 1)), 0);
    EXPECT_TRUE(back == data);
}

TEST(DeviceAsync, AReadThePageCacheHoldsCompletesAtOnce) {
    AsyncFixture f;
    const auto want = pattern(4096, 21);
    {
        const iovec v{const_cast<uint8_t*>(want.data()), want.size()};
        ASSERT_EQ(f.store->write(24 * kSectorSize, std::span(&v, 1)), 0);  // now in the page cache
    }
    BlkDevice dev(geometry(), *f.store, nullptr);
    dev.set_features(dev.features());
    auto exec = dev.async_exec(0, 8);
    ASSERT_TRUE(exec);
    BlkChains b;
    const uint64_t hdr = b.header(VIRTIO_BLK_T_IN, 24), d = b.g.alloc(4096), st = b.status();
    virtio::Completion c;
    c.exec = exec.get();
    dev.process(b.walk({Seg{hdr, 16, false}, Seg{d, 4096, true}, Seg{st, 1, true}}), c);
    EXPECT_EQ(c.defer, virtio::Defer::none);
    EXPECT_EQ(b.g.get<uint8_t>(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(c.used_len, 4096u + 1);
    EXPECT_TRUE(b.g.bytes(d, 4096) == want);
    EXPECT_EQ(exec->in_flight(), 0u);
}

TEST(DeviceAsync, FaultsMarkersAndTheWriteLogStaySynchronous) {
    AsyncFixture f;
    Geometry g = geometry();
    g.marker_sectors = 16;
    faults::Engine engine;
    engine.add(std::get<faults::Rule>(faults::parse_rule("ioerr op=read sector=0..7")));
    BlkDevice dev(g, *f.store, nullptr, &engine);
    dev.set_features(dev.features());
    auto exec = dev.async_exec(0, 8);
    ASSERT_TRUE(exec);
    auto one = [&](BlkDevice& d, uint64_t sector) {
        BlkChains b;
        const uint64_t hdr = b.header(VIRTIO_BLK_T_IN, sector), buf = b.g.alloc(512), st = b.status();
        virtio::Completion c;
        c.exec = exec.get();
        d.process(b.walk({Seg{hdr, 16, false}, Seg{buf, 512, true}, Seg{st, 1, true}}), c);
        return std::pair{c.defer, b.g.get<uint8_t>(st)};
    };
    EXPECT_EQ(one(dev, 0), std::pair(virtio::Defer::none, uint8_t{VIRTIO_BLK_S_IOERR})) << "a rule fired: executed at once";
    EXPECT_EQ(one(dev, g.capacity_sectors - 16), std::pair(virtio::Defer::none, uint8_t{VIRTIO_BLK_S_OK})) << "a marker read";
    EXPECT_EQ(exec->in_flight(), 0u);
    store::WriteLog wlog(*f.store, "");
    BlkDevice logged(geometry(), *f.store, nullptr, nullptr, &wlog);
    logged.set_features(logged.features());
    EXPECT_EQ(one(logged, 8), std::pair(virtio::Defer::none, uint8_t{VIRTIO_BLK_S_OK})) << "the crash model's write log";
    EXPECT_EQ(exec->in_flight(), 0u);
}

TEST(DeviceAsync, NoEngineForRamOrWhenTurnedOff) {
    AsyncFixture f;
    BlkDevice off(geometry(), *f.store, nullptr);
    off.use_async(false);
    EXPECT_EQ(off.async_exec(0, 8), nullptr);
    auto ram = store::make_ram(kCapacity * kSectorSize);
    BlkDevice on_ram(geometry(), *ram, nullptr);
    EXPECT_EQ(on_ram.async_exec(0, 8), nullptr);
}

// The marker region: 16 sectors past a 1 MiB store. A one-block read there is
// a marker (the guest's step boundary); it is traced as a marker, not as I/O.
TEST(DeviceMarkers, OneBlockReadIsAMarkerWithItsPatternAndTracedApart) {
    TempDir dir;
    const auto path = dir.file("t.trace");
    Geometry g = geometry();
    g.marker_sectors = 16;
    g.capacity_sectors = kCapacity + 16;
    auto store = store::make_ram(kCapacity * kSectorSize);
    BlkChains b;
    {
        trace::FileHeader fh{};
        fh.capacity_sectors = g.capacity_sectors;
        fh.logical_block_size = 512;
        fh.num_queues = 1;
        trace::Writer w(path, fh, "{}");
        BlkDevice dev(g, *store, &w);
        dev.set_features(dev.features());
        const uint64_t hdr = b.header(VIRTIO_BLK_T_IN, kCapacity + 3), d = b.g.alloc(512), st = b.status();
        virtio::Completion c;
        c.record.seq = dev.next_seq();
        dev.process(b.walk({Seg{hdr, 16, false}, Seg{d, 512, true}, Seg{st, 1, true}}), c);
        EXPECT_EQ(b.g.get<uint8_t>(st), VIRTIO_BLK_S_OK);
        EXPECT_TRUE(c.record.flags & trace::kReqMarker);
        EXPECT_EQ(marker_at(g, c.record.sector), 3u);
        const auto got = b.g.bytes(d, 512);
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data())), "BLKRIG-MARKER 3\n");
        dev.completed(c);
        w.close();
    }
    const auto t = trace::read_trace(path);
    EXPECT_TRUE(t.complete()) << t.incompleteness();
    EXPECT_TRUE(t.requests.empty());
    ASSERT_EQ(t.markers.size(), 1u);
    EXPECT_EQ(t.markers[0].index, 3u);
    EXPECT_EQ(t.markers[0].seq, 0u);
}

TEST(DeviceMarkers, WritesToTheRegionAreRefusedAndReadsAcrossItSplit) {
    Geometry g = geometry();
    g.marker_sectors = 16;
    g.capacity_sectors = kCapacity + 16;
    auto store = store::make_ram(kCapacity * kSectorSize);
    const auto data = pattern(512, 5);
    const iovec v{const_cast<uint8_t*>(data.data()), data.size()};
    ASSERT_EQ(store->write((kCapacity - 1) * kSectorSize, std::span(&v, 1)), 0);
    BlkDevice dev(g, *store, nullptr);
    dev.set_features(dev.features());
    BlkChains b;
    {
        const uint64_t hdr = b.header(VIRTIO_BLK_T_OUT, kCapacity), d = b.g.alloc(512), st = b.status();
        virtio::Completion c;
        dev.process(b.walk({Seg{hdr, 16, false}, Seg{d, 512, false}, Seg{st, 1, true}}), c);
        EXPECT_EQ(b.g.get<uint8_t>(st), VIRTIO_BLK_S_IOERR);
    }
    {
        // Last store sector plus the first marker sector: a normal read, not a marker.
        const uint64_t hdr = b.header(VIRTIO_BLK_T_IN, kCapacity - 1), d = b.g.alloc(1024), st = b.status();
        virtio::Completion c;
        dev.process(b.walk({Seg{hdr, 16, false}, Seg{d, 1024, true}, Seg{st, 1, true}}), c);
        EXPECT_EQ(b.g.get<uint8_t>(st), VIRTIO_BLK_S_OK);
        EXPECT_FALSE(c.record.flags & trace::kReqMarker);
        EXPECT_TRUE(b.g.bytes(d, 512) == data);
        const auto tail = b.g.bytes(d + 512, 512);
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(tail.data())), "BLKRIG-MARKER 0\n");
    }
    {
        // Past the marker region: out of range as anywhere else.
        const uint64_t hdr = b.header(VIRTIO_BLK_T_IN, kCapacity + 16), d = b.g.alloc(512), st = b.status();
        virtio::Completion c;
        dev.process(b.walk({Seg{hdr, 16, false}, Seg{d, 512, true}, Seg{st, 1, true}}), c);
        EXPECT_EQ(b.g.get<uint8_t>(st), VIRTIO_BLK_S_IOERR);
    }
}

}  // namespace
}  // namespace blkrig::blk

namespace blkrig::blk {
namespace {

// Fault actions on the data path: what reaches the store, what the guest
// gets back, and how completion is deferred.
struct FaultedDevice {
    // with_log: the crash model on (a write log, no exported file).
    explicit FaultedDevice(bool with_log = false)
        : store(store::make_ram(kCapacity * kSectorSize)),
          wlog(with_log ? std::make_unique<store::WriteLog>(*store, "") : nullptr),
          dev(geometry(), *store, nullptr, &engine, wlog.get()) {
        dev.set_features(dev.features());
    }
    void rule(const std::string& text) { engine.add(std::get<faults::Rule>(faults::parse_rule(text))); }
    virtio::Completion write(uint64_t sector, const std::vector<uint8_t>& data, uint8_t* status = nullptr) {
        const uint64_t hdr = b.header(VIRTIO_BLK_T_OUT, sector), d = b.g.alloc(data.size()), st = b.status();
        b.g.write(d, data.data(), data.size());
        virtio::Completion c;
        dev.process(b.walk({Seg{hdr, 16, false}, Seg{d, static_cast<uint32_t>(data.size()), false}, Seg{st, 1, true}}), c);
        if (status) *status = b.g.get<uint8_t>(st);
        last_data = d;
        return c;
    }
    virtio::Completion read(uint64_t sector, uint32_t bytes, uint8_t* status = nullptr) {
        const uint64_t hdr = b.header(VIRTIO_BLK_T_IN, sector), d = b.g.alloc(bytes), st = b.status();
        virtio::Completion c;
        dev.process(b.walk({Seg{hdr, 16, false}, Seg{d, bytes, true}, Seg{st, 1, true}}), c);
        if (status) *status = b.g.get<uint8_t>(st);
        last_data = d;
        return c;
    }
    virtio::Completion flush(uint8_t* status = nullptr) {
        const uint64_t hdr = b.header(VIRTIO_BLK_T_FLUSH, 0), st = b.status();
        virtio::Completion c;
        dev.process(b.walk({Seg{hdr, 16, false}, Seg{st, 1, true}}), c);
        if (status) *status = b.g.get<uint8_t>(st);
        return c;
    }
    std::vector<uint8_t> stored(uint64_t sector, size_t n) {
        std::vector<uint8_t> out(n);
        const iovec v{out.data(), n};
        EXPECT_EQ(store->read(sector * kSectorSize, std::span(&v, 1)), 0);
        return out;
    }
    BlkChains b;
    faults::Engine engine;
    std::unique_ptr<store::Store> store;
    std::unique_ptr<store::WriteLog> wlog;
    BlkDevice dev;
    uint64_t last_data = 0;
};

TEST(DeviceFaults, TornWritePersistsTheFirstSectorsThenFails) {
    FaultedDevice f;
    f.rule("torn=3 op=write");
    uint8_t st = 0;
    const auto data = pattern(4096, 5);
    const auto c = f.write(16, data, &st);
    EXPECT_EQ(st, VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(c.record.fault_action, static_cast<uint16_t>(faults::ActionKind::torn));
    EXPECT_EQ(f.stored(16, 1536), std::vector<uint8_t>(data.begin(), data.begin() + 1536));
    EXPECT_EQ(f.stored(19, 4096 - 1536), std::vector<uint8_t>(4096 - 1536, 0));
}

TEST(DeviceFaults, TornWriteCanReportSuccess) {
    FaultedDevice f;
    f.rule("torn=1:ok");
    uint8_t st = 0xff;
    f.write(0, pattern(2048, 1), &st);
    EXPECT_EQ(st, VIRTIO_BLK_S_OK);
    EXPECT_EQ(f.stored(1, 1536), std::vector<uint8_t>(1536, 0));
}

TEST(DeviceFaults, CorruptReadFlipsOneByteOfWhatTheGuestGets) {
    FaultedDevice f;
    const auto data = pattern(1024, 9);
    f.write(8, data);
    f.rule("corrupt=700:0x0f op=read");
    uint8_t st = 0;
    f.read(8, 1024, &st);
    EXPECT_EQ(st, VIRTIO_BLK_S_OK);
    auto want = data;
    want[700] ^= 0x0f;
    EXPECT_EQ(f.b.g.bytes(f.last_data, 1024), want);
    EXPECT_EQ(f.stored(8, 1024), data) << "a corrupt read must not change the store";
}

TEST(DeviceFaults, CorruptWriteChangesTheStoreButNotTheGuestBuffer) {
    FaultedDevice f;
    f.rule("corrupt=3 op=write");
    const auto data = pattern(512, 2);
    f.write(4, data);
    auto want = data;
    want[3] ^= 0xff;
    EXPECT_EQ(f.stored(4, 512), want);
    EXPECT_EQ(f.b.g.bytes(f.last_data, 512), data);
}

TEST(DeviceFaults, LyingWriteSaysOkAndDropsTheData) {
    FaultedDevice f;
    f.rule("lie op=write");
    uint8_t st = 0xff;
    f.write(4, pattern(512, 2), &st);
    EXPECT_EQ(st, VIRTIO_BLK_S_OK);
    EXPECT_EQ(f.stored(4, 512), std::vector<uint8_t>(512, 0));
}

TEST(DeviceFaults, DelayHoldAndReorderExecuteNowAndDeferTheCompletion) {
    FaultedDevice f;
    f.rule("hold op=write first=1");
    f.rule("reorder=3 op=read first=1");
    f.rule("delay=5ms op=read");
    const auto data = pattern(512, 4);
    const auto held = f.write(2, data);
    EXPECT_EQ(held.defer, virtio::Defer::hold);
    EXPECT_EQ(f.stored(2, 512), data) << "a held write is executed when it arrives";
    const auto ro = f.read(2, 512);
    EXPECT_EQ(ro.defer, virtio::Defer::reorder);
    EXPECT_EQ(ro.reorder_after, 3u);
    const uint64_t before = monotonic_ns();
    const auto dl = f.read(2, 512);
    EXPECT_EQ(dl.defer, virtio::Defer::until);
    EXPECT_GE(dl.defer_until_ns, before + 5'000'000);
    EXPECT_EQ(f.b.g.bytes(f.last_data, 512), data);
}

TEST(DeviceFaults, PowerCutLosesUnflushedWritesAndTurnsTheDeviceOff) {
    FaultedDevice f(true);
    uint8_t st = 0xff;
    const auto a = pattern(512, 1), b = pattern(512, 2);
    f.write(10, a, &st);
    ASSERT_EQ(st, VIRTIO_BLK_S_OK);
    f.flush(&st);
    ASSERT_EQ(st, VIRTIO_BLK_S_OK);
    f.write(20, b, &st);
    ASSERT_EQ(st, VIRTIO_BLK_S_OK);
    f.rule("lie op=flush");
    f.flush(&st);
    ASSERT_EQ(st, VIRTIO_BLK_S_OK) << "a lying flush says yes";
    const auto rep = f.dev.power_cut(store::CutMode::drop_all, 0, 0.5);
    ASSERT_EQ(rep["dropped"].size(), 1u) << "the lying flush made nothing durable";
    EXPECT_EQ(rep["dropped"][0]["sector"], 20);
    EXPECT_EQ(f.stored(10, 512), a);
    EXPECT_EQ(f.stored(20, 512), std::vector<uint8_t>(512, 0));
    EXPECT_TRUE(f.dev.powered_off());
    f.write(30, a, &st);
    EXPECT_EQ(st, VIRTIO_BLK_S_IOERR) << "a powered-off device answers IOERR";
    f.dev.power_on();
    f.write(30, a, &st);
    EXPECT_EQ(st, VIRTIO_BLK_S_OK);
}

TEST(DeviceFaults, PowerCutWithoutWriteLogIsRefused) {
    FaultedDevice f;
    EXPECT_THROW(f.dev.power_cut(store::CutMode::drop_all, 0, 0.5), std::logic_error);
}

}  // namespace
}  // namespace blkrig::blk
