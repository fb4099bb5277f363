// vhost_user::Session over a socketpair with a BlkDevice on a RAM store:
// the replies the front end sees, REPLY_ACK, refusals, how serve() ends, and
// one request carried end to end through a ring in shared memory.
#include "blk/device.hpp"
#include "store/store.hpp"
#include "vhost_user/channel.hpp"
#include "vhost_user/session.hpp"
#include "virtio/split_ring.hpp"

#include <linux/virtio_blk.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace blkrig::vhost_user {
namespace {

constexpr uint64_t kCapacity = 2048;
constexpr uint64_t bit(int n) { return 1ull << n; }

struct UsedElem {  // virtio 2.7.8
    uint32_t id;
    uint32_t len;
};

template <typename T>
std::vector<uint8_t> bytes_of(const T& v) {
    std::vector<uint8_t> out(sizeof v);
    std::memcpy(out.data(), &v, sizeof v);
    return out;
}

std::vector<uint8_t> wire(uint32_t request, uint32_t flags, const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> b(kHeaderSize);
    const uint32_t f = kVersion | flags;
    const auto size = static_cast<uint32_t>(payload.size());
    std::memcpy(b.data(), &request, 4);
    std::memcpy(b.data() + 4, &f, 4);
    std::memcpy(b.data() + 8, &size, 4);
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
}

std::vector<uint8_t> config_request(uint32_t offset, uint32_t size) {
    std::vector<uint8_t> p(12 + size, 0);
    std::memcpy(p.data(), &offset, 4);
    std::memcpy(p.data() + 4, &size, 4);
    return p;
}

blk::Geometry geometry() {
    blk::Geometry g;
    g.capacity_sectors = kCapacity;
    g.num_queues = 2;
    g.queue_size = 64;
    return g;
}

// Guest memory the "front end" (this test) shares with the session by fd.
struct SharedGuest {
    static constexpr uint64_t kSize = 1 << 20;
    static constexpr uint64_t kUva = 0x7f1200000000ull;  // front end's address for gpa 0

    SharedGuest() : fd(::memfd_create("blkrig-test-guest", MFD_CLOEXEC)) {
        if (!fd.valid() || ::ftruncate(fd.get(), kSize) != 0) throw std::runtime_error("memfd");
        void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
        if (p == MAP_FAILED) throw std::runtime_error("mmap");
        mem = static_cast<uint8_t*>(p);
    }
    ~SharedGuest() { ::munmap(mem, kSize); }
    SharedGuest(const SharedGuest&) = delete;
    SharedGuest& operator=(const SharedGuest&) = delete;

    template <typename T>
    void put(uint64_t gpa, const T& v) {
        std::memcpy(mem + gpa, &v, sizeof v);
    }
    template <typename T>
    T get(uint64_t gpa) const {
        T v;
        std::memcpy(&v, mem + gpa, sizeof v);
        return v;
    }
    // Ring indices are shared with the queue thread.
    void publish16(uint64_t gpa, uint16_t v) {
        std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem + gpa)).store(v, std::memory_order_release);
    }
    uint16_t load16(uint64_t gpa) const {
        return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem + gpa)).load(std::memory_order_acquire);
    }

    UniqueFd fd;
    uint8_t* mem = nullptr;
};

class SessionTest : public ::testing::Test {
protected:
    SessionTest() : store_(store::make_ram(kCapacity * blk::kSectorSize)), dev_(geometry(), *store_, nullptr) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
        peer_.reset(sv[1]);
        // A missing reply must fail the test, not hang it.
        const timeval tv{5, 0};
        ::setsockopt(peer_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        session_ = std::make_unique<Session>(dev_, UniqueFd(sv[0]));
    }

    void handle(uint32_t request, std::vector<uint8_t> payload = {}, uint32_t flags = 0, std::vector<UniqueFd> fds = {}) {
        Message m;
        m.hdr = Header{request, kVersion | flags, static_cast<uint32_t>(payload.size())};
        m.payload = std::move(payload);
        m.fds = std::move(fds);
        session_->handle(m);
    }

    Message reply(uint32_t request) {
        auto m = receive(peer_.get());
        if (!m) throw std::runtime_error("connection closed instead of a reply");
        EXPECT_EQ(m->hdr.request, request) << request_name(m->hdr.request);
        EXPECT_TRUE(m->hdr.flags & kFlagReply);
        return std::move(*m);
    }
    uint64_t reply_u64(uint32_t request) {
        const auto m = reply(request);
        EXPECT_EQ(m.payload.size(), 8u);
        uint64_t v = 0;
        if (m.payload.size() == 8) std::memcpy(&v, m.payload.data(), 8);
        return v;
    }
    bool reply_pending() const {
        pollfd p{peer_.get(), POLLIN, 0};
        return ::poll(&p, 1, 0) > 0;
    }
    // Sends `request` with NEED_REPLY and returns the REPLY_ACK value (0: success).
    uint64_t acked(uint32_t request, std::vector<uint8_t> payload = {}, std::vector<UniqueFd> fds = {}) {
        handle(request, std::move(payload), kFlagNeedReply, std::move(fds));
        return reply_u64(request);
    }
    void negotiate_reply_ack() {
        handle(SET_PROTOCOL_FEATURES, bytes_of(uint64_t{bit(kProtoReplyAck)}));
        ASSERT_FALSE(reply_pending());
    }

    // The guest's memfd as `copies` regions, region i at gpa i * kSize
    // (uva kUva + i * kSize), all from offset 0: copies > 1 alias its pages.
    uint64_t map_guest(const SharedGuest& g, uint32_t copies = 1) {
        std::vector<uint8_t> table(8, 0);
        std::memcpy(table.data(), &copies, 4);
        std::vector<UniqueFd> fds;
        for (uint64_t i = 0; i < copies; ++i) {
            const auto region =
                bytes_of(MemRegionDesc{i * SharedGuest::kSize, SharedGuest::kSize, SharedGuest::kUva + i * SharedGuest::kSize, 0});
            table.insert(table.end(), region.begin(), region.end());
            fds.emplace_back(::dup(g.fd.get()));
        }
        return acked(SET_MEM_TABLE, table, std::move(fds));
    }

    // Negotiates, maps g and starts queue 0 of num entries on its desc,
    // avail and used areas (offsets into g), with these kick and call fds.
    void start_ring0(SharedGuest& g, uint16_t num, uint64_t desc, uint64_t avail, uint64_t used, int kick, int call) {
        negotiate_reply_ack();
        EXPECT_EQ(acked(SET_OWNER), 0u);
        EXPECT_EQ(acked(SET_FEATURES, bytes_of(uint64_t{dev_.features() | bit(kFProtocolFeatures)})), 0u);
        EXPECT_EQ(map_guest(g), 0u);
        EXPECT_EQ(acked(SET_VRING_NUM, bytes_of(VringState{0, num})), 0u);
        EXPECT_EQ(acked(SET_VRING_BASE, bytes_of(VringState{0, 0})), 0u);
        EXPECT_EQ(acked(SET_VRING_ADDR, bytes_of(VringAddr{0, 0, SharedGuest::kUva + desc, SharedGuest::kUva + used,
                                                           SharedGuest::kUva + avail, 0})),
                  0u);
        std::vector<UniqueFd> call_fd;
        call_fd.emplace_back(::dup(call));
        EXPECT_EQ(acked(SET_VRING_CALL, bytes_of(uint64_t{0}), std::move(call_fd)), 0u);
        std::vector<UniqueFd> kick_fd;
        kick_fd.emplace_back(::dup(kick));
        EXPECT_EQ(acked(SET_VRING_KICK, bytes_of(uint64_t{0}), std::move(kick_fd)), 0u);
        EXPECT_EQ(acked(SET_VRING_ENABLE, bytes_of(VringState{0, 1})), 0u);
    }

    // From here on the session's queues are served by one SharedLoop
    // (--io-threads single) instead of a thread each.
    void use_shared_loop() {
        loop_ = std::make_unique<virtio::SharedLoop>();
        use_queues(virtio::QueueOptions{loop_.get()});
    }

    // A new session whose queues run with these options.
    void use_queues(virtio::QueueOptions q) {
        session_.reset();
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
        peer_.reset(sv[1]);
        const timeval tv{5, 0};
        ::setsockopt(peer_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        session_ = std::make_unique<Session>(dev_, UniqueFd(sv[0]), q);
    }

    std::unique_ptr<store::Store> store_;
    blk::BlkDevice dev_;
    UniqueFd peer_;
    std::unique_ptr<virtio::SharedLoop> loop_;
    std::unique_ptr<Session> session_;  // declared last: it borrows dev_ and loop_
};

TEST_F(SessionTest, GetFeaturesOffersProtocolFeaturesAndVersion1) {
    handle(GET_FEATURES);
    const uint64_t f = reply_u64(GET_FEATURES);
    EXPECT_TRUE(f & bit(kFProtocolFeatures));
    EXPECT_TRUE(f & bit(virtio::kFVersion1));
    EXPECT_EQ(f, dev_.features() | bit(kFProtocolFeatures));
}

TEST_F(SessionTest, GetProtocolFeatures) {
    handle(GET_PROTOCOL_FEATURES);
    const uint64_t f = reply_u64(GET_PROTOCOL_FEATURES);
    EXPECT_EQ(f, offered_protocol_features());
    EXPECT_TRUE(f & bit(kProtoReplyAck));
    EXPECT_TRUE(f & bit(kProtoMq));
    EXPECT_TRUE(f & bit(kProtoConfig));
    EXPECT_TRUE(f & bit(kProtoInflightShmfd));
}

TEST_F(SessionTest, NeedReplyWithoutReplyAckGetsNoReply) {
    handle(SET_OWNER, {}, kFlagNeedReply);
    EXPECT_FALSE(reply_pending());
}

TEST_F(SessionTest, ReplyAckAnswersNeedReplyWithZero) {
    negotiate_reply_ack();
    EXPECT_EQ(acked(SET_OWNER), 0u);
    // Without NEED_REPLY nothing comes back, even with REPLY_ACK negotiated.
    handle(SET_OWNER);
    EXPECT_FALSE(reply_pending());
}

TEST_F(SessionTest, SetProtocolFeaturesWithUnofferedBitFails) {
    negotiate_reply_ack();
    // Bit 1 is LOG_SHMFD (migration logging), which this back end does not offer.
    EXPECT_NE(acked(SET_PROTOCOL_FEATURES, bytes_of(uint64_t{bit(kProtoReplyAck) | bit(1)})), 0u);
}

TEST_F(SessionTest, SetFeaturesWithUnofferedBitFails) {
    negotiate_reply_ack();
    const uint64_t offered = dev_.features() | bit(kFProtocolFeatures);
    uint64_t stray = 0;
    for (int b = 0; b < 64 && stray == 0; ++b)
        if (!(offered & bit(b))) stray = bit(b);
    ASSERT_NE(stray, 0u);
    EXPECT_NE(acked(SET_FEATURES, bytes_of(uint64_t{offered | stray})), 0u);
}

TEST_F(SessionTest, SetFeaturesReachesTheDevice) {
    negotiate_reply_ack();
    EXPECT_EQ(acked(SET_FEATURES, bytes_of(uint64_t{dev_.features() & ~bit(VIRTIO_BLK_F_FLUSH)})), 0u);
    EXPECT_FALSE(dev_.writeback()) << "FLUSH not acked: write-through";
    EXPECT_EQ(acked(SET_FEATURES, bytes_of(uint64_t{dev_.features()})), 0u);
    EXPECT_TRUE(dev_.writeback());
}

TEST_F(SessionTest, GetQueueNum) {
    handle(GET_QUEUE_NUM);
    EXPECT_EQ(reply_u64(GET_QUEUE_NUM), 2u);
}

TEST_F(SessionTest, GetConfigReturnsCapacity) {
    handle(GET_CONFIG, config_request(0, 8));
    const auto m = reply(GET_CONFIG);
    ASSERT_EQ(m.payload.size(), 12u + 8u);
    uint32_t offset, size;
    uint64_t capacity;
    std::memcpy(&offset, m.payload.data(), 4);
    std::memcpy(&size, m.payload.data() + 4, 4);
    std::memcpy(&capacity, m.payload.data() + 12, 8);
    EXPECT_EQ(offset, 0u);
    EXPECT_EQ(size, 8u);
    EXPECT_EQ(capacity, kCapacity);
}

TEST_F(SessionTest, GetConfigWholeSpace) {
    handle(GET_CONFIG, config_request(0, sizeof(virtio_blk_config)));
    const auto m = reply(GET_CONFIG);
    ASSERT_EQ(m.payload.size(), 12 + sizeof(virtio_blk_config));
    virtio_blk_config cfg;
    std::memcpy(&cfg, m.payload.data() + 12, sizeof cfg);
    EXPECT_EQ(cfg.capacity, kCapacity);
    EXPECT_EQ(cfg.num_queues, 2u);
}

TEST_F(SessionTest, GetConfigBeyondConfigSpaceGetsEmptyReply) {
    negotiate_reply_ack();
    handle(GET_CONFIG, config_request(sizeof(virtio_blk_config) - 4, 8), kFlagNeedReply);
    const auto m = reply(GET_CONFIG);
    EXPECT_TRUE(m.payload.empty());
    EXPECT_FALSE(reply_pending()) << "GET_CONFIG has its own reply; no REPLY_ACK on top";
}

TEST_F(SessionTest, SetConfigWritesOnlyWce) {
    negotiate_reply_ack();
    std::vector<uint8_t> p(12, 0);
    const uint32_t offset = offsetof(virtio_blk_config, wce), size = 1;
    std::memcpy(p.data(), &offset, 4);
    std::memcpy(p.data() + 4, &size, 4);
    p.push_back(0);
    EXPECT_EQ(acked(SET_CONFIG, p), 0u);
    EXPECT_FALSE(dev_.writeback());

    const uint32_t capacity_offset = 0;
    std::memcpy(p.data(), &capacity_offset, 4);
    EXPECT_NE(acked(SET_CONFIG, p), 0u);
}

TEST_F(SessionTest, SetVringNumMustBeAPowerOfTwoWithinQueueSize) {
    negotiate_reply_ack();
    EXPECT_NE(acked(SET_VRING_NUM, bytes_of(VringState{0, 48})), 0u);
    EXPECT_NE(acked(SET_VRING_NUM, bytes_of(VringState{0, 0})), 0u);
    EXPECT_NE(acked(SET_VRING_NUM, bytes_of(VringState{0, 128})), 0u) << "above the device's queue_size 64";
    EXPECT_EQ(acked(SET_VRING_NUM, bytes_of(VringState{0, 64})), 0u);
    EXPECT_EQ(acked(SET_VRING_NUM, bytes_of(VringState{1, 1})), 0u);
}

TEST_F(SessionTest, VringIndexBeyondQueueCountIsAProtocolError) {
    EXPECT_THROW(handle(SET_VRING_NUM, bytes_of(VringState{2, 8})), ProtocolError);
    EXPECT_THROW(handle(GET_VRING_BASE, bytes_of(VringState{7, 0})), ProtocolError);
}

TEST_F(SessionTest, GetVringBaseReturnsTheBaseThatWasSet) {
    handle(SET_VRING_BASE, bytes_of(VringState{1, 1234}));
    handle(GET_VRING_BASE, bytes_of(VringState{1, 0}));
    const auto m = reply(GET_VRING_BASE);
    ASSERT_EQ(m.payload.size(), sizeof(VringState));
    VringState s;
    std::memcpy(&s, m.payload.data(), sizeof s);
    EXPECT_EQ(s.index, 1u);
    EXPECT_EQ(s.num, 1234u);
}

TEST_F(SessionTest, KickWithoutFdIsRefused) {
    negotiate_reply_ack();
    EXPECT_NE(acked(SET_VRING_KICK, bytes_of(uint64_t{kVringNoFd})), 0u);
    EXPECT_EQ(acked(SET_VRING_CALL, bytes_of(uint64_t{kVringNoFd})), 0u) << "no call fd is allowed (polling driver)";
}

TEST_F(SessionTest, MessageWithUnexpectedPayloadIsAProtocolError) {
    EXPECT_THROW(handle(GET_FEATURES, {1, 2, 3, 4, 5, 6, 7, 8}), ProtocolError);
}

TEST_F(SessionTest, ServeClosesOnUnknownRequest) {
    send_bytes(peer_.get(), wire(99, 0, {}));
    EXPECT_FALSE(session_->serve(-1));
    session_.reset();
    char c;
    EXPECT_EQ(::recv(peer_.get(), &c, 1, 0), 0) << "the connection should be closed";
}

TEST_F(SessionTest, ServeClosesOnBadVersion) {
    auto b = wire(GET_FEATURES, 0, {});
    b[4] = 2;  // flags: version 2
    send_bytes(peer_.get(), b);
    EXPECT_FALSE(session_->serve(-1));
    EXPECT_FALSE(reply_pending());
}

TEST_F(SessionTest, ServeAnswersUntilThePeerCloses) {
    send_bytes(peer_.get(), wire(GET_QUEUE_NUM, 0, {}));
    send_bytes(peer_.get(), wire(GET_FEATURES, 0, {}));
    ::shutdown(peer_.get(), SHUT_WR);
    EXPECT_FALSE(session_->serve(-1));
    EXPECT_EQ(reply_u64(GET_QUEUE_NUM), 2u);
    EXPECT_TRUE(reply_u64(GET_FEATURES) & bit(kFProtocolFeatures));
}

TEST_F(SessionTest, ServeReturnsTrueOnStopFd) {
    UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
    ASSERT_TRUE(stop.valid());
    std::atomic<int> result{-1};
    std::thread t([&] { result = session_->serve(stop.get()) ? 1 : 0; });
    // The session thread is serving: a request gets its reply.
    send_bytes(peer_.get(), wire(GET_QUEUE_NUM, 0, {}));
    EXPECT_EQ(reply_u64(GET_QUEUE_NUM), 2u);
    const uint64_t one = 1;
    ASSERT_EQ(::write(stop.get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
    t.join();
    EXPECT_EQ(result.load(), 1);
}

// --- a request through a ring in shared memory ------------------------------

bool wait_readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

// Found by fuzz_vhost_session: a region larger than its file mapped, and
// the first request into the part past the file's end was SIGBUS in the
// queue thread. Now the table is refused; one the file holds is taken.
TEST_F(SessionTest, AMemoryRegionPastTheEndOfItsFileIsRefused) {
    SharedGuest g;
    negotiate_reply_ack();
    auto table = [&](uint64_t size, uint64_t offset) {
        std::vector<uint8_t> t(8, 0);
        const uint32_t nregions = 1;
        std::memcpy(t.data(), &nregions, 4);
        const auto region = bytes_of(MemRegionDesc{0, size, SharedGuest::kUva, offset});
        t.insert(t.end(), region.begin(), region.end());
        std::vector<UniqueFd> fds;
        fds.emplace_back(::dup(g.fd.get()));
        return acked(SET_MEM_TABLE, t, std::move(fds));
    };
    EXPECT_EQ(table(2 * SharedGuest::kSize, 0), 1u);
    EXPECT_EQ(table(SharedGuest::kSize, 4096), 1u);  // the offset counts too
    EXPECT_EQ(table(SharedGuest::kSize - 4096, 4096), 0u);
    EXPECT_EQ(table(SharedGuest::kSize, 0), 0u);
}

TEST_F(SessionTest, WriteThenReadThroughARing) {
    constexpr uint16_t kNum = 8;
    constexpr uint64_t kDesc = 0x0, kAvail = 0x1000, kUsed = 0x2000, kHdr = 0x3000, kData = 0x4000, kStatus = 0x6000;
    SharedGuest g;
    UniqueFd kick(::eventfd(0, EFD_CLOEXEC)), call(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    start_ring0(g, kNum, kDesc, kAvail, kUsed, kick.get(), call.get());

    // Submits a 3-descriptor request at avail index n and waits for its interrupt.
    auto submit = [&](uint16_t n, uint32_t type, bool data_writable) {
        virtio_blk_outhdr h{};
        h.type = type;
        h.sector = 16;
        g.put(kHdr, h);
        g.put(kStatus, uint8_t{0xee});
        g.put(kDesc + 0, virtio::RawDesc{kHdr, 16, virtio::kDescFNext, 1});
        g.put(kDesc + 16,
              virtio::RawDesc{kData, 4096, static_cast<uint16_t>(virtio::kDescFNext | (data_writable ? virtio::kDescFWrite : 0)),
                              2});
        g.put(kDesc + 32, virtio::RawDesc{kStatus, 1, virtio::kDescFWrite, 0});
        g.put<uint16_t>(kAvail + 4 + 2u * (n % kNum), 0);
        g.put<uint16_t>(kAvail + 4 + 2u * kNum, n);  // used_event: interrupt once entry n is used
        g.publish16(kAvail + 2, static_cast<uint16_t>(n + 1));
        const uint64_t one = 1;
        ASSERT_EQ(::write(kick.get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
        ASSERT_TRUE(wait_readable(call.get(), 5000)) << "no interrupt for request " << n;
        uint64_t count;
        ASSERT_EQ(::read(call.get(), &count, sizeof count), static_cast<ssize_t>(sizeof count));
        ASSERT_EQ(g.load16(kUsed + 2), n + 1);
    };

    for (size_t i = 0; i < 4096; ++i) g.mem[kData + i] = static_cast<uint8_t>(i * 13 + 1);
    const std::vector<uint8_t> written(g.mem + kData, g.mem + kData + 4096);
    submit(0, VIRTIO_BLK_T_OUT, false);
    const auto e0 = g.get<UsedElem>(kUsed + 4);
    EXPECT_EQ(e0.id, 0u);
    EXPECT_EQ(e0.len, 1u);
    EXPECT_EQ(g.get<uint8_t>(kStatus), VIRTIO_BLK_S_OK);
    std::vector<uint8_t> stored(4096);
    const iovec v{stored.data(), stored.size()};
    ASSERT_EQ(store_->read(16 * blk::kSectorSize, std::span(&v, 1)), 0);
    EXPECT_TRUE(stored == written);

    std::memset(g.mem + kData, 0, 4096);
    submit(1, VIRTIO_BLK_T_IN, true);
    const auto e1 = g.get<UsedElem>(kUsed + 4 + 8);
    EXPECT_EQ(e1.id, 0u);
    EXPECT_EQ(e1.len, 4097u);
    EXPECT_EQ(g.get<uint8_t>(kStatus), VIRTIO_BLK_S_OK);
    EXPECT_TRUE(std::equal(written.begin(), written.end(), g.mem + kData));

    // Stopping the ring reports where the driver should resume.
    handle(GET_VRING_BASE, bytes_of(VringState{0, 0}));
    const auto m = reply(GET_VRING_BASE);
    ASSERT_EQ(m.payload.size(), sizeof(VringState));
    VringState s;
    std::memcpy(&s, m.payload.data(), sizeof s);
    EXPECT_EQ(s.num, 2u);
}

// --- a driver that keeps its ring busy forever ---------------------------
//
// Finding 11 (fuzz_vhost_session): a front end laid a queue's used ring over
// its own avail ring. Every completion then wrote the used index over the
// avail index, publishing one more request, and the queue thread never got
// back to its poll: GET_VRING_BASE (stop, join) hung. Overlapping addresses
// are now refused; the same rings through two aliases of one memfd page
// cannot be told apart, so there the queue works in budgets and still
// stops, and a shared loop still serves its other queues.

constexpr uint16_t kBusyNum = 8;
constexpr uint64_t kBusyDesc = 0x0, kBusyAvail = 0x1000, kBusyHdr = 0x3000, kBusyStatus = 0x3100;
constexpr uint64_t kQuietDesc = 0x8000, kQuietAvail = 0x9000, kQuietUsed = 0xa000, kQuietHdr = 0xb000, kQuietStatus = 0xb100;

// A queue that busy-polls (--poll-us) finds a buffer the driver made
// available without kicking: its window grew over the waits before, each
// far inside its largest window. Without polling the buffer would wait for
// a kick that never comes.
TEST_F(SessionTest, APollingQueueServesABufferNobodyKicked) {
    constexpr uint16_t kNum = 64;
    constexpr uint64_t kDesc = 0x0, kAvail = 0x1000, kUsed = 0x2000, kHdr = 0x3000, kStatus = 0x6000;
    use_queues(virtio::QueueOptions{nullptr, 10'000'000'000});
    SharedGuest g;
    UniqueFd kick(::eventfd(0, EFD_CLOEXEC)), call(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    start_ring0(g, kNum, kDesc, kAvail, kUsed, kick.get(), call.get());

    // A flush at avail index n (header, status), kicked or not.
    auto publish = [&](uint16_t n, bool with_kick) {
        virtio_blk_outhdr h{};
        h.type = VIRTIO_BLK_T_FLUSH;
        g.put(kHdr, h);
        g.put(kStatus, uint8_t{0xee});
        g.put(kDesc + 0, virtio::RawDesc{kHdr, 16, virtio::kDescFNext, 1});
        g.put(kDesc + 16, virtio::RawDesc{kStatus, 1, virtio::kDescFWrite, 0});
        g.put<uint16_t>(kAvail + 4 + 2u * (n % kNum), 0);
        g.publish16(kAvail + 2, static_cast<uint16_t>(n + 1));
        if (with_kick) {
            const uint64_t one = 1;
            ASSERT_EQ(::write(kick.get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
        }
    };
    auto used_reaches = [&](uint16_t n) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (g.load16(kUsed + 2) != n && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::microseconds(50));
        return g.load16(kUsed + 2) == n;
    };
    // 20 ms between kicked flushes: each wait doubles the window, from 4 us
    // past 20 ms after 13 of them; then the waits end inside it.
    for (uint16_t n = 0; n < 16; ++n) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        publish(n, true);
        ASSERT_TRUE(used_reaches(static_cast<uint16_t>(n + 1))) << "kicked flush " << n << " was not served";
    }
    publish(16, false);
    EXPECT_TRUE(used_reaches(17)) << "the buffer nobody kicked was not served: the queue did not poll";
    EXPECT_EQ(g.get<uint8_t>(kStatus), VIRTIO_BLK_S_OK);
    // While it spins (a window of 20 ms and more) the queue leaves the
    // driver's notifications off: avail_event (VIRTIO_RING_F_EVENT_IDX) is
    // behind, so a driver that follows it does not kick.
    const uint64_t avail_event = kUsed + 4 + 8u * kNum;
    EXPECT_NE(g.load16(avail_event), 17) << "notifications were on while the queue polled";
    // Before it sleeps it turns them on again: a driver that follows
    // avail_event kicks for the next buffer, and it is served.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (g.load16(avail_event) != 17 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_EQ(g.load16(avail_event), 17) << "the queue went to sleep with the driver's notifications off";
    publish(17, true);
    EXPECT_TRUE(used_reaches(18)) << "the kicked flush after the spin was not served";
    // The queue stops while it spins; it resumes after the 18 flushes.
    handle(GET_VRING_BASE, bytes_of(VringState{0, 0}));
    VringState s;
    const auto m = reply(GET_VRING_BASE);
    ASSERT_EQ(m.payload.size(), sizeof s);
    std::memcpy(&s, m.payload.data(), sizeof s);
    EXPECT_EQ(s.num, 18u);
}

class BusyRingTest : public SessionTest {
protected:
    // Two regions, both the memfd from offset 0: gpa/uva 0 and kSize alias.
    void map_twice() {
        negotiate_reply_ack();
        ASSERT_EQ(acked(SET_OWNER), 0u);
        ASSERT_EQ(acked(SET_FEATURES, bytes_of(uint64_t{dev_.features() | bit(kFProtocolFeatures)})), 0u);
        ASSERT_EQ(map_guest(g_, 2), 0u);
    }

    // Two flush requests, heads 0 and 1 (0 -> 2, 1 -> 3): the used elements
    // written over the avail ring only ever name heads 0 and 1 (an id, then
    // a length of 1), so each one is again a valid request.
    void two_flushes(uint64_t desc, uint64_t hdr, uint64_t status) {
        virtio_blk_outhdr h{};
        h.type = VIRTIO_BLK_T_FLUSH;
        g_.put(hdr, h);
        g_.put(desc + 0, virtio::RawDesc{hdr, 16, virtio::kDescFNext, 2});
        g_.put(desc + 16, virtio::RawDesc{hdr, 16, virtio::kDescFNext, 3});
        g_.put(desc + 32, virtio::RawDesc{status, 1, virtio::kDescFWrite, 0});
        g_.put(desc + 48, virtio::RawDesc{status, 1, virtio::kDescFWrite, 0});
    }

    void start_queue(uint32_t index, uint64_t desc_uva, uint64_t avail_uva, uint64_t used_uva) {
        ASSERT_EQ(acked(SET_VRING_NUM, bytes_of(VringState{index, kBusyNum})), 0u);
        ASSERT_EQ(acked(SET_VRING_BASE, bytes_of(VringState{index, 0})), 0u);
        ASSERT_EQ(acked(SET_VRING_ADDR, bytes_of(VringAddr{index, 0, desc_uva, used_uva, avail_uva, 0})), 0u);
        kicks_[index] = UniqueFd(::eventfd(0, EFD_CLOEXEC));
        calls_[index] = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        std::vector<UniqueFd> call_fd;
        call_fd.emplace_back(::dup(calls_[index].get()));
        ASSERT_EQ(acked(SET_VRING_CALL, bytes_of(uint64_t{index}), std::move(call_fd)), 0u);
        std::vector<UniqueFd> kick_fd;
        kick_fd.emplace_back(::dup(kicks_[index].get()));
        ASSERT_EQ(acked(SET_VRING_KICK, bytes_of(uint64_t{index}), std::move(kick_fd)), 0u);
        ASSERT_EQ(acked(SET_VRING_ENABLE, bytes_of(VringState{index, 1})), 0u);
    }

    void kick(uint32_t index) {
        const uint64_t one = 1;
        ASSERT_EQ(::write(kicks_[index].get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
    }

    // Queue 0's used ring is its avail ring, seen through the second alias.
    void start_busy_queue() {
        two_flushes(kBusyDesc, kBusyHdr, kBusyStatus);
        g_.put<uint16_t>(kBusyAvail + 4, 0);
        // Published before the start: the used index the queue reads then is
        // 1, one ahead of the request it takes, and stays one ahead.
        g_.publish16(kBusyAvail + 2, 1);
        start_queue(0, SharedGuest::kUva + kBusyDesc, SharedGuest::kUva + kBusyAvail,
                    SharedGuest::kUva + SharedGuest::kSize + kBusyAvail);
        kick(0);
        // It is busy: the index it keeps publishing climbs well past one ring.
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (g_.load16(kBusyAvail + 2) < 4 * kBusyNum && std::chrono::steady_clock::now() < until) std::this_thread::yield();
        ASSERT_GE(g_.load16(kBusyAvail + 2), 4 * kBusyNum) << "the aliased rings did not keep the queue busy";
    }

    // GET_VRING_BASE stops the ring (the watchdog catches a hang).
    uint32_t stop_queue(uint32_t index) {
        handle(GET_VRING_BASE, bytes_of(VringState{index, 0}));
        const auto m = reply(GET_VRING_BASE);
        VringState st{};
        EXPECT_EQ(m.payload.size(), sizeof st);
        if (m.payload.size() == sizeof st) std::memcpy(&st, m.payload.data(), sizeof st);
        return st.num;
    }

    // A busy queue that cannot be stopped, or that starves the loop's
    // add/remove, hangs the test thread in a join or on a lock it cannot
    // leave; the watchdog fails the binary instead of waiting for meson.
    struct Watchdog {
        Watchdog()
            : t([this] {
                  std::unique_lock lock(mu);
                  if (!cv.wait_for(lock, std::chrono::seconds(30), [this] { return done; })) {
                      std::fprintf(stderr, "FAILED: the test hung 30 s: a busy queue did not let go\n");
                      std::fflush(nullptr);
                      std::_Exit(1);
                  }
              }) {}
        ~Watchdog() {
            {
                std::lock_guard lock(mu);
                done = true;
            }
            cv.notify_one();
            t.join();
        }
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        std::thread t;
    };

    // The session (its queues) ends under the watchdog's eye.
    ~BusyRingTest() override { session_.reset(); }

    Watchdog watchdog_;
    SharedGuest g_;
    UniqueFd kicks_[2], calls_[2];
};

TEST_F(BusyRingTest, AUsedRingOverTheAvailRingIsRefused) {
    map_twice();
    two_flushes(kBusyDesc, kBusyHdr, kBusyStatus);
    g_.put(kBusyStatus, uint8_t{0xee});
    start_queue(0, SharedGuest::kUva + kBusyDesc, SharedGuest::kUva + kBusyAvail, SharedGuest::kUva + kBusyAvail);
    g_.publish16(kBusyAvail + 2, 1);
    kick(0);
    EXPECT_FALSE(wait_readable(calls_[0].get(), 300)) << "the queue ran a request on overlapping rings";
    EXPECT_EQ(g_.get<uint8_t>(kBusyStatus), 0xee);
    EXPECT_EQ(g_.load16(kBusyAvail + 2), 1u);
    EXPECT_EQ(stop_queue(0), 0u);
    EXPECT_TRUE(dev_.stats_json().empty()) << dev_.stats_json().dump();
}

TEST_F(BusyRingTest, AQueueKeptBusyByAliasedRingsStillStops) {
    map_twice();
    start_busy_queue();
    const uint32_t base = stop_queue(0);
    EXPECT_GE(base, 4u * kBusyNum);
    // It stays stopped: nothing moves the index any more.
    const uint16_t after = g_.load16(kBusyAvail + 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(g_.load16(kBusyAvail + 2), after);
}

TEST_F(BusyRingTest, ASharedLoopServesItsOtherQueuesAndStops) {
    use_shared_loop();
    map_twice();
    start_busy_queue();
    // Queue 1, ordinary rings on the same loop: its request completes.
    two_flushes(kQuietDesc, kQuietHdr, kQuietStatus);
    g_.put(kQuietStatus, uint8_t{0xee});
    g_.put<uint16_t>(kQuietAvail + 4, 0);
    start_queue(1, SharedGuest::kUva + kQuietDesc, SharedGuest::kUva + kQuietAvail, SharedGuest::kUva + kQuietUsed);
    g_.publish16(kQuietAvail + 2, 1);
    kick(1);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (g_.load16(kQuietUsed + 2) != 1 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    EXPECT_EQ(g_.load16(kQuietUsed + 2), 1u) << "queue 1 starved behind the busy queue 0";
    EXPECT_EQ(g_.get<uint8_t>(kQuietStatus), VIRTIO_BLK_S_OK);
    EXPECT_GE(stop_queue(0), 4u * kBusyNum);
    EXPECT_EQ(stop_queue(1), 1u);
}

}  // namespace
}  // namespace blkrig::vhost_user
