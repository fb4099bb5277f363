// The inflight region (vhost-user "Inflight I/O tracking", split rings):
// the bookkeeping on a plain buffer (marking, clearing, the last batch, the
// recovery order and the seqs it keeps), then a session that leaves a held
// write in flight when its front end goes away and a second session on the
// same region that resubmits it under the same seq, once.
#include "blk/device.hpp"
#include "faults/engine.hpp"
#include "store/store.hpp"
#include "common/temp_dir.hpp"
#include "trace/reader.hpp"
#include "vhost_user/channel.hpp"
#include "vhost_user/session.hpp"
#include "virtio/inflight.hpp"

#include <linux/virtio_blk.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

namespace blkrig {
namespace {

using virtio::InflightDesc;
using virtio::InflightHeader;
using virtio::InflightQueue;

struct Region {
    explicit Region(uint16_t num, uint16_t queues = 1) : num(num), bytes(virtio::inflight_queue_bytes(num) * queues, 0) {}
    InflightHeader& hdr(uint16_t q = 0) { return *reinterpret_cast<InflightHeader*>(base(q)); }
    InflightDesc& desc(uint16_t i, uint16_t q = 0) { return reinterpret_cast<InflightDesc*>(base(q) + sizeof(InflightHeader))[i]; }
    uint8_t* base(uint16_t q = 0) { return bytes.data() + virtio::inflight_queue_bytes(num) * q; }
    uint16_t num;
    std::vector<uint8_t> bytes;
};

TEST(Inflight, QueueBytesFollowTheSpecLayoutRoundedTo64) {
    EXPECT_EQ(virtio::inflight_queue_bytes(128), 2112u);  // 16 + 16 * 128 = 2064, rounded up
    EXPECT_EQ(virtio::inflight_queue_bytes(4), 128u);     // 16 + 64 = 80
    EXPECT_EQ(virtio::inflight_queue_bytes(256) % 64, 0u);
}

TEST(Inflight, AFreshRegionIsInitialisedAndResumesNothing) {
    Region r(8);
    InflightQueue q(r.base(), 8);
    const auto rec = q.recover(5);
    EXPECT_TRUE(rec.fresh);
    EXPECT_TRUE(rec.resubmit.empty());
    EXPECT_EQ(rec.last_avail, 5);
    EXPECT_EQ(r.hdr().version, virtio::kInflightVersion);
    EXPECT_EQ(r.hdr().desc_num, 8);
    EXPECT_EQ(r.hdr().used_idx, 5);
}

TEST(Inflight, FetchedMarksAndCountsCompletionClears) {
    Region r(8);
    InflightQueue q(r.base(), 8);
    q.recover(0);
    q.fetched(3, 100);
    q.fetched(1, 101);
    EXPECT_EQ(r.desc(3).inflight, 1);
    EXPECT_EQ(r.desc(1).inflight, 1);
    EXPECT_LT(r.desc(3).counter, r.desc(1).counter);
    EXPECT_EQ(q.max_seq(), 101);
    q.before_used(3);
    EXPECT_EQ(r.hdr().last_batch_head, 3);
    q.after_used(3, 1);
    EXPECT_EQ(r.desc(3).inflight, 0);
    EXPECT_EQ(r.hdr().used_idx, 1);
    EXPECT_TRUE(q.in_flight(1));
    EXPECT_FALSE(q.in_flight(3));
    EXPECT_EQ(q.max_seq(), 101);
    // A head beyond the ring is ignored, not written past the region.
    q.fetched(200, 7);
    EXPECT_FALSE(q.in_flight(200));
}

TEST(Inflight, RecoveryListsInFlightHeadsInFetchOrderWithTheirSeqs) {
    Region r(8);
    {
        InflightQueue first(r.base(), 8);
        first.recover(0);
        for (uint16_t h : {5, 2, 7, 0}) first.fetched(h, 40 + h);
        first.before_used(2);
        first.after_used(2, 1);  // head 2 completed: used index 1
    }
    // The next back end: same region, the guest's used index is 1.
    InflightQueue next(r.base(), 8);
    const auto rec = next.recover(1);
    EXPECT_FALSE(rec.fresh);
    ASSERT_EQ(rec.resubmit.size(), 3u);
    EXPECT_EQ(rec.resubmit[0].head, 5);
    EXPECT_EQ(rec.resubmit[1].head, 7);
    EXPECT_EQ(rec.resubmit[2].head, 0);
    EXPECT_TRUE(rec.resubmit[0].has_seq);
    EXPECT_EQ(rec.resubmit[0].seq, 45u);
    EXPECT_EQ(rec.resubmit[2].seq, 40u);
    // Fetched heads are either used (1) or in flight (3).
    EXPECT_EQ(rec.last_avail, 4);
    // New fetches count on after the resubmitted ones, which keep their counters.
    const uint64_t c5 = r.desc(5).counter;
    next.fetched(5, 45);
    EXPECT_EQ(r.desc(5).counter, c5);
    EXPECT_EQ(next.max_seq(), 47);
    next.fetched(3, 50);
    EXPECT_GT(r.desc(3).counter, r.desc(0).counter);
}

TEST(Inflight, UsedRingPublishedBeforeTheMarkWasClearedCountsAsCompleted) {
    Region r(4);
    {
        InflightQueue q(r.base(), 4);
        q.recover(0);
        q.fetched(1, 0);
        q.fetched(2, 1);
        q.before_used(1);
        // The back end died after used->idx became 1, before after_used().
    }
    InflightQueue q(r.base(), 4);
    const auto rec = q.recover(1);
    ASSERT_EQ(rec.resubmit.size(), 1u);
    EXPECT_EQ(rec.resubmit[0].head, 2);
    EXPECT_EQ(rec.last_avail, 2);
    EXPECT_EQ(r.desc(1).inflight, 0);
    EXPECT_EQ(r.hdr().used_idx, 1);
}

TEST(Inflight, DiedBeforeTheUsedRingMovedResubmitsTheLastBatchToo) {
    Region r(4);
    {
        InflightQueue q(r.base(), 4);
        q.recover(0);
        q.fetched(1, 0);
        q.before_used(1);  // died before used->idx moved
    }
    InflightQueue q(r.base(), 4);
    const auto rec = q.recover(0);
    ASSERT_EQ(rec.resubmit.size(), 1u);
    EXPECT_EQ(rec.resubmit[0].head, 1);
    EXPECT_EQ(rec.last_avail, 1);
}

TEST(Inflight, ACorruptLastBatchHeadIsNotFollowedOutOfTheRegion) {
    Region r(4);
    InflightQueue q(r.base(), 4);
    q.recover(0);
    q.fetched(0, 0);
    r.hdr().last_batch_head = 60000;
    const auto rec = InflightQueue(r.base(), 4).recover(9);
    EXPECT_EQ(rec.resubmit.size(), 1u);
}

TEST(Inflight, MaxSeqOverQueuesSkipsFreshOnesAndUnknownSeqs) {
    Region r(8, 2);
    EXPECT_EQ(virtio::inflight_max_seq(r.bytes.data(), 2, 8), -1);
    InflightQueue q1(r.base(1), 8);
    q1.recover(0);
    q1.fetched(4, 77);
    EXPECT_EQ(virtio::inflight_max_seq(r.bytes.data(), 2, 8), 77);
    // Another back end's entry without a seq: in flight, numbered anew.
    r.desc(6, 1).counter = 5;
    r.desc(6, 1).inflight = 1;
    EXPECT_EQ(virtio::inflight_max_seq(r.bytes.data(), 2, 8), 77);
    const auto rec = InflightQueue(r.base(1), 8).recover(0);
    ASSERT_EQ(rec.resubmit.size(), 2u);
    EXPECT_EQ(rec.resubmit[0].head, 4);
    EXPECT_TRUE(rec.resubmit[0].has_seq);
    EXPECT_EQ(rec.resubmit[1].head, 6);
    EXPECT_FALSE(rec.resubmit[1].has_seq);
    // Resubmitted under a new seq, which the region then keeps.
    InflightQueue(r.base(1), 8).fetched(6, 90);
    EXPECT_EQ(virtio::inflight_max_seq(r.bytes.data(), 2, 8), 90);
}

// --- two sessions on one inflight region -------------------------------------

constexpr uint64_t kCapacity = 2048;
constexpr uint64_t bit(int n) { return 1ull << n; }

template <typename T>
std::vector<uint8_t> bytes_of(const T& v) {
    std::vector<uint8_t> out(sizeof v);
    std::memcpy(out.data(), &v, sizeof v);
    return out;
}

struct SharedMemfd {
    SharedMemfd(const char* name, size_t size) : fd(::memfd_create(name, MFD_CLOEXEC)), size(size) {
        if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw std::runtime_error("memfd");
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
        if (p == MAP_FAILED) throw std::runtime_error("mmap");
        mem = static_cast<uint8_t*>(p);
    }
    ~SharedMemfd() { ::munmap(mem, size); }
    uint16_t load16(uint64_t off) const {
        return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem + off)).load(std::memory_order_acquire);
    }
    UniqueFd fd;
    size_t size;
    uint8_t* mem = nullptr;
};

// The test plays the front end: a socketpair to a Session, a request handled
// at a time with NEED_REPLY.
struct FrontEnd {
    FrontEnd(blk::BlkDevice& dev) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
        peer.reset(sv[1]);
        const timeval tv{5, 0};
        ::setsockopt(peer.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        session = std::make_unique<vhost_user::Session>(dev, UniqueFd(sv[0]));
    }
    void send(uint32_t request, std::vector<uint8_t> payload, uint32_t flags = 0, std::vector<UniqueFd> fds = {}) {
        vhost_user::Message m;
        m.hdr = vhost_user::Header{request, vhost_user::kVersion | flags, static_cast<uint32_t>(payload.size())};
        m.payload = std::move(payload);
        m.fds = std::move(fds);
        session->handle(m);
    }
    uint64_t acked(uint32_t request, std::vector<uint8_t> payload = {}, std::vector<UniqueFd> fds = {}) {
        send(request, std::move(payload), vhost_user::kFlagNeedReply, std::move(fds));
        auto m = vhost_user::receive(peer.get());
        if (!m || m->payload.size() != 8) throw std::runtime_error("no REPLY_ACK");
        uint64_t v;
        std::memcpy(&v, m->payload.data(), 8);
        return v;
    }
    static std::vector<UniqueFd> fd_of(int fd) {
        std::vector<UniqueFd> v;
        v.emplace_back(::dup(fd));
        return v;
    }
    UniqueFd peer;
    std::unique_ptr<vhost_user::Session> session;
};

class InflightSession : public ::testing::Test {
protected:
    static constexpr uint16_t kNum = 8;
    static constexpr uint64_t kDesc = 0x0, kAvail = 0x1000, kUsed = 0x2000, kHdr = 0x3000, kData = 0x4000, kStatus = 0x6000;
    static constexpr uint64_t kUva = 0x7f1200000000ull;

    InflightSession() : store_(store::make_ram(kCapacity * blk::kSectorSize)), guest_("guest", 1 << 20) {
        trace::FileHeader h{};
        h.capacity_sectors = kCapacity;
        h.logical_block_size = 512;
        h.num_queues = 1;
        trace_ = std::make_unique<trace::Writer>(dir_.file("trace.bin"), h, "{}");
        auto rule = faults::parse_rule("hold op=write first=1");
        engine_.add(std::get<faults::Rule>(rule));
        blk::Geometry g;
        g.capacity_sectors = kCapacity;
        g.queue_size = 64;
        dev_ = std::make_unique<blk::BlkDevice>(g, *store_, trace_.get(), &engine_);
    }

    // Everything QEMU sends to start a device, with the inflight region first.
    void start(FrontEnd& fe, int inflight_fd, uint64_t inflight_size, uint16_t base) {
        using namespace vhost_user;
        fe.send(SET_PROTOCOL_FEATURES, bytes_of(uint64_t{bit(kProtoReplyAck) | bit(kProtoInflightShmfd)}));
        ASSERT_EQ(fe.acked(SET_FEATURES, bytes_of(uint64_t{dev_->features() | bit(kFProtocolFeatures)})), 0u);
        InflightInfo info{inflight_size, 0, 1, kNum};
        ASSERT_EQ(fe.acked(SET_INFLIGHT_FD, encode_inflight(info), FrontEnd::fd_of(inflight_fd)), 0u);
        std::vector<uint8_t> table(8, 0);
        const uint32_t nregions = 1;
        std::memcpy(table.data(), &nregions, 4);
        const auto region = bytes_of(MemRegionDesc{0, guest_.size, kUva, 0});
        table.insert(table.end(), region.begin(), region.end());
        ASSERT_EQ(fe.acked(SET_MEM_TABLE, table, FrontEnd::fd_of(guest_.fd.get())), 0u);
        ASSERT_EQ(fe.acked(SET_VRING_NUM, bytes_of(VringState{0, kNum})), 0u);
        ASSERT_EQ(fe.acked(SET_VRING_BASE, bytes_of(VringState{0, base})), 0u);
        ASSERT_EQ(fe.acked(SET_VRING_ADDR, bytes_of(VringAddr{0, 0, kUva + kDesc, kUva + kUsed, kUva + kAvail, 0})), 0u);
        ASSERT_EQ(fe.acked(SET_VRING_CALL, bytes_of(uint64_t{0}), FrontEnd::fd_of(call_.get())), 0u);
        ASSERT_EQ(fe.acked(SET_VRING_KICK, bytes_of(uint64_t{0}), FrontEnd::fd_of(kick_.get())), 0u);
        ASSERT_EQ(fe.acked(SET_VRING_ENABLE, bytes_of(VringState{0, 1})), 0u);
    }

    // A session takes an inflight region and sends one write, which the hold rule keeps.
    void hold_one_write(FrontEnd& fe, UniqueFd& region_fd, uint64_t& region_size) {
        using namespace vhost_user;
        // GET_INFLIGHT_FD: a memfd comes back with the reply.
        fe.send(GET_INFLIGHT_FD, encode_inflight(InflightInfo{0, 0, 1, kNum}));
        auto m = receive(fe.peer.get());
        ASSERT_TRUE(m);
        ASSERT_EQ(m->payload.size(), 24u);
        ASSERT_EQ(m->fds.size(), 1u);
        const auto info = decode_inflight(Message{{GET_INFLIGHT_FD, 0, 24}, m->payload, {}});
        EXPECT_EQ(info.mmap_size, virtio::inflight_queue_bytes(kNum));
        region_fd = std::move(m->fds[0]);
        region_size = info.mmap_size;
        start(fe, region_fd.get(), region_size, 0);

        // One write: the hold rule keeps it off the used ring.
        virtio_blk_outhdr h{};
        h.type = VIRTIO_BLK_T_OUT;
        h.sector = 8;
        std::memcpy(guest_.mem + kHdr, &h, sizeof h);
        for (size_t i = 0; i < 4096; ++i) guest_.mem[kData + i] = static_cast<uint8_t>(i * 7 + 3);
        guest_.mem[kStatus] = 0xee;
        const virtio::RawDesc d[3] = {{kHdr, 16, virtio::kDescFNext, 1}, {kData, 4096, virtio::kDescFNext, 2}, {kStatus, 1, virtio::kDescFWrite, 0}};
        std::memcpy(guest_.mem + kDesc, d, sizeof d);
        std::memset(guest_.mem + kAvail + 4, 0, 2);  // ring[0] = head 0
        std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(guest_.mem + kAvail + 2)).store(1, std::memory_order_release);
        const uint64_t one = 1;
        ASSERT_EQ(::write(kick_.get(), &one, sizeof one), 8);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (dev_->deferrals()->held().empty() && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        ASSERT_EQ(dev_->deferrals()->held().size(), 1u);
    }

    std::unique_ptr<store::Store> store_;
    SharedMemfd guest_;
    TempDir dir_;
    std::unique_ptr<trace::Writer> trace_;
    faults::Engine engine_;
    std::unique_ptr<blk::BlkDevice> dev_;
    UniqueFd kick_{::eventfd(0, EFD_CLOEXEC)}, call_{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
};

TEST_F(InflightSession, ARegionLargerThanItsFileIsRefused) {
    using namespace vhost_user;
    FrontEnd fe(*dev_);
    fe.send(SET_PROTOCOL_FEATURES, bytes_of(uint64_t{bit(kProtoReplyAck) | bit(kProtoInflightShmfd)}));
    SharedMemfd small("small", 64);
    // 1 queue of 8 needs 192 bytes; the file has 64.
    EXPECT_NE(fe.acked(SET_INFLIGHT_FD, encode_inflight(InflightInfo{192, 0, 1, kNum}), FrontEnd::fd_of(small.fd.get())), 0u);
    EXPECT_NE(fe.acked(SET_INFLIGHT_FD, encode_inflight(InflightInfo{64, 0, 1, kNum}), FrontEnd::fd_of(small.fd.get())), 0u);
    EXPECT_NE(fe.acked(SET_INFLIGHT_FD, encode_inflight(InflightInfo{192, 0, 0, kNum}), FrontEnd::fd_of(small.fd.get())), 0u);
}

TEST_F(InflightSession, AHeldWriteStaysInFlightWhenTheFrontEndGoesAndTheNextSessionResumesItOnce) {
    using namespace vhost_user;
    UniqueFd region_fd;
    uint64_t region_size = 0;
    {
        FrontEnd fe(*dev_);
        hold_one_write(fe, region_fd, region_size);
        if (HasFatalFailure()) return;
        // The front end goes away (the session ends) with the write held.
    }
    EXPECT_TRUE(dev_->deferrals()->held().empty());
    EXPECT_EQ(guest_.load16(kUsed + 2), 0) << "a held request was completed as its queue stopped";
    void* view = ::mmap(nullptr, region_size, PROT_READ, MAP_SHARED, region_fd.get(), 0);
    ASSERT_NE(view, MAP_FAILED);
    const auto* desc0 = reinterpret_cast<const InflightDesc*>(static_cast<uint8_t*>(view) + sizeof(InflightHeader));
    EXPECT_EQ(desc0[0].inflight, 1);

    {
        // A new connection, as after a back-end restart: SET_VRING_BASE
        // carries the used index (0), the region knows better.
        FrontEnd fe(*dev_);
        start(fe, region_fd.get(), region_size, 0);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (guest_.load16(kUsed + 2) != 1 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        ASSERT_EQ(guest_.load16(kUsed + 2), 1) << "the resumed write did not complete";
        EXPECT_EQ(guest_.mem[kStatus], VIRTIO_BLK_S_OK);
        EXPECT_EQ(desc0[0].inflight, 0);
    }
    ::munmap(view, region_size);
    std::vector<uint8_t> stored(4096);
    const iovec v{stored.data(), stored.size()};
    ASSERT_EQ(store_->read(8 * blk::kSectorSize, std::span(&v, 1)), 0);
    for (size_t i = 0; i < 4096; ++i) ASSERT_EQ(stored[i], static_cast<uint8_t>(i * 7 + 3)) << "byte " << i;

    EXPECT_EQ(dev_->record_unfinished(), 0u) << "a resumed request is not unfinished";
    trace_->close();
    const auto t = trace::read_trace(dir_.file("trace.bin"));
    ASSERT_EQ(t.requests.size(), 1u) << "the write must complete exactly once";
    EXPECT_EQ(t.requests[0].seq, 0u);
    EXPECT_TRUE(t.requests[0].flags & trace::kReqResubmitted);
    bool left = false, resumed = false;
    for (const auto& e : t.events) {
        left = left || e.code == trace::EventCode::left_in_flight;
        resumed = resumed || e.code == trace::EventCode::resumed;
    }
    EXPECT_TRUE(left);
    EXPECT_TRUE(resumed);
}

TEST_F(InflightSession, AHeldWriteNobodyResumesIsTracedUnfinishedWhenTheDeviceEnds) {
    UniqueFd region_fd;
    uint64_t region_size = 0;
    {
        FrontEnd fe(*dev_);
        hold_one_write(fe, region_fd, region_size);
        if (HasFatalFailure()) return;
    }
    EXPECT_EQ(guest_.load16(kUsed + 2), 0) << "a held request was completed as its queue stopped";
    EXPECT_EQ(dev_->record_unfinished(), 1u);
    EXPECT_EQ(dev_->record_unfinished(), 0u) << "traced twice";
    trace_->close();
    const auto t = trace::read_trace(dir_.file("trace.bin"));
    EXPECT_TRUE(t.bad.empty());
    ASSERT_EQ(t.requests.size(), 1u);
    const auto& r = t.requests[0];
    EXPECT_EQ(r.seq, 0u);
    EXPECT_TRUE(r.flags & trace::kReqUnfinished);
    EXPECT_EQ(r.status, trace::kStatusNone);
    EXPECT_EQ(r.sector, 8u);
    EXPECT_GE(r.t_complete_ns, r.t_submit_ns);
    ASSERT_EQ(t.faults.size(), 1u) << "the hold that kept it is traced with it";
    EXPECT_EQ(t.faults[0].seq, 0u);
}

}  // namespace
}  // namespace blkrig
