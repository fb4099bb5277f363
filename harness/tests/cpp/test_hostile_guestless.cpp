// A hostile driver against a real blkrig-device process: our front end, in
// raw mode, writes descriptors and avail entries no sane driver would, and
// each case checks the device's answer (a status in the status byte, or the
// queue stopped with its reason logged and its error eventfd signalled, as
// virtio 1.x 2.1.2 DEVICE_NEEDS_RESET asks) and that the next good request is
// served, on the same queue after a reset where one was needed.
// docs/reliability.md lists every case with its spec reference.
#include "frontend/frontend.hpp"
#include "launch/process.hpp"
#include "trace/reader.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace blkrig {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Fe = frontend::Frontend;
using Desc = Fe::Desc;

constexpr uint16_t kNext = 1, kWrite = 2, kIndirect = 4;  // VRING_DESC_F_*
constexpr uint64_t kImageBytes = 4 << 20;
constexpr uint64_t kCapacity = kImageBytes / 512;
constexpr size_t kGuestMemory = 64u << 20;  // frontend::Options' default
constexpr uint16_t kRing = 128;             // frontend::Options' default

fs::path build_dir() {
    const char* b = std::getenv("BLKRIG_BUILD_DIR");
    return b ? fs::path(b) : fs::canonical("/proc/self/exe").parent_path().parent_path().parent_path();
}

// The thread model the cases run under: a thread per queue, or one epoll
// loop for all (--io-threads single); each stops a broken queue its own way.
std::string g_io_threads = "per-queue";

// One blkrig-device process on a 4 MiB image, logging at info level, with
// a trace.
struct Device {
    fs::path dir, image, socket, log, trace;
    launch::Child child;

    explicit Device(const std::vector<std::string>& extra = {}, unsigned queues = 1) {
        char tmpl[] = "/tmp/blkrig-hostile-XXXXXX";
        dir = ::mkdtemp(tmpl);
        image = dir / "disk.img", socket = dir / "s", log = dir / "device.log", trace = dir / "trace.bin";
        { std::ofstream(image).close(); }
        fs::resize_file(image, kImageBytes);
        std::vector<std::string> argv = {(build_dir() / "qemu-device" / "blkrig-device").string(), "--socket-path", socket.string(),
                                         "--blk-file", image.string(), "--num-queues", std::to_string(queues),
                                         "--io-threads", g_io_threads, "--trace", trace.string()};
        argv.insert(argv.end(), extra.begin(), extra.end());
        child = launch::Child("blkrig-device", argv, log.string());
        for (int i = 0; i < 1000 && !fs::exists(socket) && !child.poll(); ++i) std::this_thread::sleep_for(5ms);
        if (!fs::exists(socket)) throw std::runtime_error("blkrig-device did not listen:\n" + launch::tail_lines(log.string(), 10));
    }
    ~Device() {
        child.terminate(3000ms);
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    frontend::Options opts(uint16_t queues = 1) const {
        frontend::Options o;
        o.socket_path = socket.string();
        o.queues = queues;
        return o;
    }
    std::string log_text() const {
        std::ifstream in(log);
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    // The device writes its log line before it signals or completes, but
    // the file is read by another process: allow it a moment.
    bool logged(const std::string& needle) const {
        for (int i = 0; i < 100; ++i) {
            if (log_text().find(needle) != std::string::npos) return true;
            std::this_thread::sleep_for(10ms);
        }
        return false;
    }
    bool alive() { return !child.poll(); }
    // Stops the device (the trace gets its end record) and reads its trace.
    trace::Trace stop_and_read_trace() {
        child.terminate(3000ms);
        return trace::read_trace(trace.string());
    }
};

Fe::Buf header(Fe& fe, uint32_t type, uint64_t sector) {
    auto b = fe.alloc(16, 16);
    virtio_blk_outhdr h{};
    h.type = type;
    h.sector = sector;
    std::memcpy(b.host, &h, sizeof h);
    return b;
}

Fe::Buf status_byte(Fe& fe) {
    auto b = fe.alloc(1, 1);
    *b.host = 0xff;  // no virtio status
    return b;
}

void fill(Fe::Buf b, uint32_t seed) {
    std::mt19937 rng(seed);
    for (uint32_t i = 0; i < b.len; ++i) b.host[i] = static_cast<uint8_t>(rng());
}

// Lays descs into free slots of queue q, each linked to the next with NEXT;
// the last keeps the flags it was given (and its raw next).
std::vector<uint16_t> lay(Fe& fe, std::vector<Desc> descs, uint16_t q = 0) {
    const auto slots = fe.take_slots(q, descs.size());
    for (size_t i = 0; i < descs.size(); ++i) {
        if (i + 1 < descs.size()) {
            descs[i].flags |= kNext;
            descs[i].next = slots[i + 1];
        }
        fe.write_desc(q, slots[i], descs[i]);
    }
    return slots;
}

// Publishes the chain in slots and kicks.
void offer(Fe& fe, const std::vector<uint16_t>& slots, Fe::Buf status, uint16_t q = 0) {
    fe.publish(q, slots[0], slots, status);
    fe.kick(q);
}

// The one completion of head, which must come back within 5 s.
frontend::Completed answer(Fe& fe, uint16_t head, uint16_t q = 0) {
    for (int i = 0; i < 50; ++i)
        for (const auto& c : fe.wait(100ms))
            if (c.queue == q && c.tag == head) return c;
    ADD_FAILURE() << "head " << head << " was not returned in 5 s";
    return {q, head, 0xff, 0xffffffff};
}

// A good write and read back on queue q, served and equal.
void expect_served(Device& dev, Fe& fe, uint16_t q = 0) {
    auto w = fe.alloc(4096), r = fe.alloc(4096);
    fill(w, 99);
    ASSERT_EQ(fe.write(24, w, q), VIRTIO_BLK_S_OK) << dev.log_text();
    ASSERT_EQ(fe.read(24, r, q), VIRTIO_BLK_S_OK);
    EXPECT_EQ(std::memcmp(w.host, r.host, 4096), 0);
    EXPECT_TRUE(dev.alive()) << dev.log_text();
}

// The device stopped queue q (error eventfd, nothing on the used ring, the
// reason in its log), serves nothing more on it, and serves again once the
// driver resets it.
void expect_broken(Device& dev, Fe& fe, uint16_t head, const std::string& why, uint16_t q = 0) {
    ASSERT_TRUE(fe.wait_error(q, 5000ms)) << "no error signalled; device log:\n" << dev.log_text();
    // The device signals after it dropped the chain: had it answered, the answer would be here.
    EXPECT_TRUE(fe.wait(50ms).empty()) << "a broken chain came back on the used ring";
    EXPECT_TRUE(dev.logged(fmt::format("queue {} head {}: ", q, head))) << dev.log_text();
    EXPECT_TRUE(dev.logged(why)) << "expected \"" << why << "\" in\n" << dev.log_text();
    EXPECT_TRUE(dev.logged("the queue is stopped until the driver resets it")) << dev.log_text();
    // Stopped means stopped: a good request now is not served.
    auto b = fe.alloc(512);
    ASSERT_TRUE(fe.submit(q, VIRTIO_BLK_T_IN, 0, {b}));
    EXPECT_TRUE(fe.wait(100ms).empty()) << "a broken queue served a request";
    fe.reset_queue(q);
    expect_served(dev, fe, q);
}

// The device answered head with status st; the queue goes on.
void expect_status(Device& dev, Fe& fe, uint16_t head, uint8_t st, uint16_t q = 0) {
    const auto c = answer(fe, head, q);
    EXPECT_EQ(c.status, st) << dev.log_text();
    EXPECT_EQ(c.used_len, 1u) << "a refused request reports only its status byte";
    EXPECT_FALSE(fe.wait_error(q, 0ms)) << "the queue was stopped for a request-level error";
    expect_served(dev, fe, q);
}

// The image's bytes [off, off+n).
std::vector<uint8_t> image_bytes(const Device& dev, uint64_t off, size_t n) {
    std::ifstream in(dev.image, std::ios::binary);
    std::vector<uint8_t> out(n);
    in.seekg(static_cast<std::streamoff>(off));
    in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(n));
    return out;
}

// A read request's usual three descriptors, for cases that spoil one of them.
struct ReadChain {
    Fe::Buf hdr, data, st;
    ReadChain(Fe& fe, uint64_t sector, uint32_t len = 4096)
        : hdr(header(fe, VIRTIO_BLK_T_IN, sector)), data(fe.alloc(len)), st(status_byte(fe)) {}
    Desc h() const { return {hdr.gpa, 16, 0, 0}; }
    Desc d() const { return {data.gpa, data.len, kWrite, 0}; }
    Desc s() const { return {st.gpa, 1, kWrite, 0}; }
};

class Hostile : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override { g_io_threads = GetParam(); }
};

// --- guest addresses -----------------------------------------------------------

// 2.7.5: the device maps every buffer; an address outside the memory table
// cannot be the driver's own.
TEST_P(Hostile, BufferOutsideGuestMemory) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {rc.h(), {kGuestMemory + 4096, 4096, kWrite, 0}, rc.s()});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "buffer outside guest memory at descriptor");
    EXPECT_EQ(*rc.st.host, 0xff) << "status written for a broken chain";
}

TEST_P(Hostile, BufferRunningPastTheEndOfGuestMemory) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {rc.h(), {kGuestMemory - 512, 4096, kWrite, 0}, rc.s()});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "buffer outside guest memory");
}

TEST_P(Hostile, AddressPlusLengthWrapsAround) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {rc.h(), {UINT64_MAX - 100, 4096, kWrite, 0}, rc.s()});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "buffer lengths overflow");
}

// --- chain structure -----------------------------------------------------------

// 2.7.5.2 (driver: no loops): the walk stops after a queue size of
// descriptors. Another queue is not affected.
TEST_P(Hostile, DescriptorLoopStopsOnlyItsQueue) {
    Device dev({}, 2);
    Fe fe(dev.opts(2));
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {rc.h(), rc.d(), rc.s()});
    fe.write_desc(0, slots[2], {rc.st.gpa, 1, kWrite | kNext, slots[1]});  // status -> data -> status ...
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "chain longer than its table (descriptor loop)");
    expect_served(dev, fe, 1);
    const auto t = dev.stop_and_read_trace();
    ASSERT_TRUE(t.complete()) << t.incompleteness();
    size_t broken = 0;
    for (const auto& e : t.events)
        if (e.code == trace::EventCode::queue_broken) {
            ++broken;
            EXPECT_EQ(e.queue, 0u);
            EXPECT_EQ(e.head, slots[0]);
            EXPECT_NE(e.text.find("descriptor loop"), std::string::npos) << e.text;
        }
    EXPECT_EQ(broken, 1u);
    // The broken chain took no sequence number: the good requests count from 0.
    ASSERT_EQ(t.requests.size(), 4u);
    for (const auto& r : t.requests) EXPECT_LT(r.seq, 4u);
}

TEST_P(Hostile, DescriptorPointingAtItself) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {rc.h(), rc.d(), rc.s()});
    fe.write_desc(0, slots[1], {rc.data.gpa, 4096, kWrite | kNext, slots[1]});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "descriptor loop");
}

// 2.7.5: next must index the table.
TEST_P(Hostile, NextOutOfRange) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {rc.h(), rc.d()});
    fe.write_desc(0, slots[1], {rc.data.gpa, 4096, kWrite | kNext, 1000});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "next index out of range");
}

// 2.7.6: avail ring entries are heads of chains in the table.
TEST_P(Hostile, AvailEntryOutOfRange) {
    Device dev;
    Fe fe(dev.opts());
    fe.publish(0, 4000);
    fe.kick(0);
    expect_broken(dev, fe, 4000, "head index out of range");
}

// 2.7.13.3: the driver adds at most a queue size of buffers; an avail index
// more than that ahead of what the device consumed cannot be right.
TEST_P(Hostile, AvailIndexJumpsPastTheRingSize) {
    Device dev;
    Fe fe(dev.opts());
    fe.set_avail_idx(0, kRing + 5);
    fe.kick(0);
    ASSERT_TRUE(fe.wait_error(0, 5000ms)) << dev.log_text();
    EXPECT_TRUE(dev.logged(fmt::format("avail index moved from 0 to {}, more than the queue size {}", kRing + 5, kRing))) << dev.log_text();
    EXPECT_TRUE(fe.wait(200ms).empty());
    fe.reset_queue(0);
    expect_served(dev, fe);
}

// 2.7.4.2 (device-readable before device-writable): a device-writable
// header followed by a device-readable buffer.
TEST_P(Hostile, ReadableDescriptorAfterWritableOne) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {{rc.hdr.gpa, 16, kWrite, 0}, {rc.data.gpa, 4096, 0, 0}, rc.s()});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "device-readable descriptor after a device-writable one");
}

// --- indirect descriptors (2.7.5.3) -----------------------------------------------

TEST_P(Hostile, IndirectInsideIndirect) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto inner = fe.indirect_table({{rc.hdr.gpa, 16, kNext, 1}, {rc.data.gpa, 4096, kWrite | kNext, 2}, {rc.st.gpa, 1, kWrite, 0}});
    const auto outer = fe.indirect_table({{inner.gpa, inner.len, kIndirect, 0}});
    const auto slots = lay(fe, {{outer.gpa, outer.len, kIndirect, 0}});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "indirect descriptor inside an indirect table");
}

TEST_P(Hostile, IndirectWithNext) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    auto table = fe.indirect_table({{rc.hdr.gpa, 16, kNext, 1}, {rc.data.gpa, 4096, kWrite | kNext, 2}, {rc.st.gpa, 1, kWrite, 0}});
    const auto slots = lay(fe, {{table.gpa, table.len, kIndirect, 0}, rc.s()});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "indirect descriptor with NEXT set");
}

TEST_P(Hostile, IndirectLengthNotAMultipleOf16) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    auto table = fe.indirect_table({{rc.hdr.gpa, 16, kNext, 1}, {rc.data.gpa, 4096, kWrite | kNext, 2}, {rc.st.gpa, 1, kWrite, 0}});
    const auto slots = lay(fe, {{table.gpa, 40, kIndirect, 0}});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], fmt::format("indirect table length is zero or not a multiple of 16 at descriptor {}: len 40", slots[0]));
}

TEST_P(Hostile, IndirectLengthZero) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {{rc.hdr.gpa, 0, kIndirect, 0}});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], fmt::format("indirect table length is zero or not a multiple of 16 at descriptor {}: len 0", slots[0]));
}

TEST_P(Hostile, IndirectTableOutsideGuestMemory) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {{kGuestMemory + (1 << 20), 48, kIndirect, 0}});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "indirect table outside guest memory");
}

// 2.7.5.3.1: INDIRECT only if VIRTIO_RING_F_INDIRECT_DESC was negotiated.
TEST_P(Hostile, IndirectWithoutTheFeature) {
    Device dev;
    auto o = dev.opts();
    o.indirect = false;
    Fe fe(o);
    ASSERT_FALSE(fe.features() & (1ull << 28));
    ReadChain rc(fe, 0);
    auto table = fe.indirect_table({{rc.hdr.gpa, 16, kNext, 1}, {rc.data.gpa, 4096, kWrite | kNext, 2}, {rc.st.gpa, 1, kWrite, 0}});
    const auto slots = lay(fe, {{table.gpa, table.len, kIndirect, 0}});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "indirect descriptor but INDIRECT_DESC was not negotiated");
}

// An over-long chain: 2000 chained entries in one indirect table (the length
// alone could ask for 2^28). Refused before the table is walked.
TEST_P(Hostile, IndirectTableTooLong) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0, 512);
    std::vector<Desc> descs = {{rc.hdr.gpa, 16, kNext, 1}};
    for (uint16_t i = 1; i < 1999; ++i) descs.push_back({rc.data.gpa, 1, kWrite | kNext, static_cast<uint16_t>(i + 1)});
    descs.push_back({rc.st.gpa, 1, kWrite, 0});
    auto table = fe.indirect_table(descs);
    const auto slots = lay(fe, {{table.gpa, table.len, kIndirect, 0}});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], fmt::format("indirect table longer than a chain may be at descriptor {}: 2000 entries, at most 1026", slots[0]));
}

TEST_P(Hostile, LoopInsideIndirectTable) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    auto table = fe.indirect_table({{rc.hdr.gpa, 16, kNext, 1}, {rc.data.gpa, 4096, kWrite | kNext, 2}, {rc.st.gpa, 1, kWrite | kNext, 1}});
    const auto slots = lay(fe, {{table.gpa, table.len, kIndirect, 0}});
    offer(fe, slots, rc.st);
    expect_broken(dev, fe, slots[0], "descriptor loop) at indirect descriptor");
}

// --- request framing (5.2.6): answered IOERR, the queue goes on ------------------

// The header must be device-readable (5.2.6: "le32 type; ... le64 sector" are
// the driver's); a chain with no readable byte has no header at all.
TEST_P(Hostile, HeaderDeviceWritable) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {{rc.hdr.gpa, 16, kWrite, 0}, rc.d(), rc.s()});
    offer(fe, slots, rc.st);
    expect_status(dev, fe, slots[0], VIRTIO_BLK_S_IOERR);
    EXPECT_TRUE(dev.logged("request header shorter than 16 bytes: 0 device-readable bytes"));
}

TEST_P(Hostile, HeaderShorterThan16Bytes) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    const auto slots = lay(fe, {{rc.hdr.gpa, 8, 0, 0}, rc.d(), rc.s()});
    offer(fe, slots, rc.st);
    expect_status(dev, fe, slots[0], VIRTIO_BLK_S_IOERR);
    EXPECT_TRUE(dev.logged("request header shorter than 16 bytes: 8 device-readable bytes"));
}

// 5.2.6: the status is the last device-writable byte. With none the device
// cannot answer: it returns the buffer with used length 0, writes nothing
// (and its trace marks the request malformed).
TEST_P(Hostile, StatusDescriptorReadOnly) {
    Device dev;
    Fe fe(dev.opts());
    auto hdr = header(fe, VIRTIO_BLK_T_OUT, 0);
    auto data = fe.alloc(4096);
    fill(data, 5);
    auto st = status_byte(fe);
    const auto slots = lay(fe, {{hdr.gpa, 16, 0, 0}, {data.gpa, 4096, 0, 0}, {st.gpa, 1, 0, 0}});
    offer(fe, slots, st);
    const auto c = answer(fe, slots[0]);
    EXPECT_EQ(c.used_len, 0u);
    EXPECT_EQ(*st.host, 0xff) << "the device wrote a read-only status byte";
    EXPECT_TRUE(dev.logged("no device-writable status byte at the end of the chain"));
    EXPECT_EQ(image_bytes(dev, 0, 4096), std::vector<uint8_t>(4096, 0)) << "the write reached the image";
    expect_served(dev, fe);
    // Traced as the malformed request it was, with no status.
    const auto t = dev.stop_and_read_trace();
    ASSERT_FALSE(t.requests.empty());
    auto first = *std::min_element(t.requests.begin(), t.requests.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
    EXPECT_EQ(first.head, slots[0]);
    EXPECT_EQ(first.flags & trace::kReqMalformed, trace::kReqMalformed);
    EXPECT_EQ(first.status, trace::kStatusNone);
}

TEST_P(Hostile, StatusDescriptorZeroLength) {
    Device dev;
    Fe fe(dev.opts());
    auto hdr = header(fe, VIRTIO_BLK_T_FLUSH, 0);
    auto st = status_byte(fe);
    const auto slots = lay(fe, {{hdr.gpa, 16, 0, 0}, {st.gpa, 0, kWrite, 0}});
    offer(fe, slots, st);
    const auto c = answer(fe, slots[0]);
    EXPECT_EQ(c.used_len, 0u);
    EXPECT_EQ(*st.host, 0xff);
    EXPECT_TRUE(dev.logged("no device-writable status byte"));
    expect_served(dev, fe);
}

// A read whose data buffer is device-readable: the device cannot write it.
TEST_P(Hostile, ReadIntoADeviceReadableBuffer) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0);
    fill(rc.data, 7);
    const std::vector<uint8_t> before(rc.data.host, rc.data.host + 4096);
    const auto slots = lay(fe, {rc.h(), {rc.data.gpa, 4096, 0, 0}, rc.s()});
    offer(fe, slots, rc.st);
    expect_status(dev, fe, slots[0], VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(std::vector<uint8_t>(rc.data.host, rc.data.host + 4096), before);
    EXPECT_TRUE(dev.logged("payload in buffers of the wrong direction: device-readable payload on a request that returns data"));
}

TEST_P(Hostile, WriteFromADeviceWritableBuffer) {
    Device dev;
    Fe fe(dev.opts());
    auto hdr = header(fe, VIRTIO_BLK_T_OUT, 0);
    auto data = fe.alloc(4096);
    fill(data, 8);
    auto st = status_byte(fe);
    const auto slots = lay(fe, {{hdr.gpa, 16, 0, 0}, {data.gpa, 4096, kWrite, 0}, {st.gpa, 1, kWrite, 0}});
    offer(fe, slots, st);
    expect_status(dev, fe, slots[0], VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(image_bytes(dev, 0, 4096), std::vector<uint8_t>(4096, 0)) << "the write reached the image";
    EXPECT_TRUE(dev.logged("device-writable payload on a request that carries data to the device"));
}

// 2.6.4 (message framing): the device may not assume how the driver split a
// request into descriptors, so a zero-length data descriptor is no error.
// It carries no bytes; the request is served from the others.
TEST_P(Hostile, ZeroLengthDataDescriptorIsServed) {
    Device dev;
    Fe fe(dev.opts());
    auto w = fe.alloc(4096);
    fill(w, 11);
    ASSERT_EQ(fe.write(64, w), VIRTIO_BLK_S_OK);
    ReadChain rc(fe, 64);
    auto empty = fe.alloc(512);
    const auto slots = lay(fe, {rc.h(), {empty.gpa, 0, kWrite, 0}, rc.d(), rc.s()});
    offer(fe, slots, rc.st);
    const auto c = answer(fe, slots[0]);
    EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
    EXPECT_EQ(c.used_len, 4097u);
    EXPECT_EQ(std::memcmp(rc.data.host, w.host, 4096), 0);
    expect_served(dev, fe);
}

// --- requests the device refuses (5.2.6.2) -----------------------------------

// Past the capacity: IOERR (the spec's "MUST NOT ... beyond capacity").
TEST_P(Hostile, ReadPastCapacity) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, kCapacity - 4);
    const auto slots = lay(fe, {rc.h(), rc.d(), rc.s()});
    offer(fe, slots, rc.st);
    expect_status(dev, fe, slots[0], VIRTIO_BLK_S_IOERR);
}

TEST_P(Hostile, WriteStraddlingTheEnd) {
    Device dev;
    Fe fe(dev.opts());
    auto w = fe.alloc(8192);
    fill(w, 12);
    EXPECT_EQ(fe.write(kCapacity - 8, w), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(image_bytes(dev, kImageBytes - 4096, 4096), std::vector<uint8_t>(4096, 0)) << "part of the write landed";
    expect_served(dev, fe);
}

// sector + length computed without wrapping: a sector near 2^64 is not
// "sector 0 plus a bit".
TEST_P(Hostile, SectorNearTwoToThe64) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, UINT64_MAX - 3);
    const auto slots = lay(fe, {rc.h(), rc.d(), rc.s()});
    offer(fe, slots, rc.st);
    expect_status(dev, fe, slots[0], VIRTIO_BLK_S_IOERR);
}

// 5.2.6: data is a multiple of 512 bytes.
TEST_P(Hostile, LengthNotAMultipleOf512) {
    Device dev;
    Fe fe(dev.opts());
    ReadChain rc(fe, 0, 1000);
    const auto slots = lay(fe, {rc.h(), rc.d(), rc.s()});
    offer(fe, slots, rc.st);
    expect_status(dev, fe, slots[0], VIRTIO_BLK_S_IOERR);
}

// 5.2.6.2: with VIRTIO_BLK_F_RO offered, writes fail with IOERR; discard is
// not offered, so it is UNSUPP.
TEST_P(Hostile, WritesToAReadOnlyDevice) {
    Device dev({"--read-only"});
    Fe fe(dev.opts());
    auto w = fe.alloc(4096);
    fill(w, 13);
    EXPECT_EQ(fe.write(0, w), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(image_bytes(dev, 0, 4096), std::vector<uint8_t>(4096, 0)) << "a read-only device wrote";
    auto seg = fe.alloc(16);
    virtio_blk_discard_write_zeroes d{};
    d.sector = 0;
    d.num_sectors = 8;
    std::memcpy(seg.host, &d, sizeof d);
    EXPECT_EQ(fe.submit(0, VIRTIO_BLK_T_DISCARD, 0, {seg}).has_value(), true);
    const auto c = fe.wait(5000ms);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].status, VIRTIO_BLK_S_UNSUPP);
    auto r = fe.alloc(4096);
    EXPECT_EQ(fe.read(0, r), VIRTIO_BLK_S_OK);
    EXPECT_TRUE(dev.alive());
}

// 5.2.6.2: an unknown type is UNSUPP.
TEST_P(Hostile, UnknownRequestType) {
    Device dev;
    Fe fe(dev.opts());
    auto hdr = header(fe, 0x7777, 0);
    auto st = status_byte(fe);
    const auto slots = lay(fe, {{hdr.gpa, 16, 0, 0}, {st.gpa, 1, kWrite, 0}});
    offer(fe, slots, st);
    expect_status(dev, fe, slots[0], VIRTIO_BLK_S_UNSUPP);
}

// GET_ID into fewer than its 20 bytes: the first bytes of the serial, and
// nothing past the buffer (QEMU answers the same).
TEST_P(Hostile, GetIdBufferTooSmall) {
    Device dev({"--serial", "0123456789abcdefghij"});
    Fe fe(dev.opts());
    auto hdr = header(fe, VIRTIO_BLK_T_GET_ID, 0);
    auto buf = fe.alloc(16, 16);
    std::memset(buf.host, 0xaa, 16);
    auto st = status_byte(fe);
    const auto slots = lay(fe, {{hdr.gpa, 16, 0, 0}, {buf.gpa, 8, kWrite, 0}, {st.gpa, 1, kWrite, 0}});
    offer(fe, slots, st);
    const auto c = answer(fe, slots[0]);
    EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
    EXPECT_EQ(std::string(reinterpret_cast<char*>(buf.host), 8), "01234567");
    EXPECT_EQ(buf.host[8], 0xaa) << "GET_ID wrote past its buffer";
    expect_served(dev, fe);
}

Fe::Buf discard_segments(Fe& fe, const std::vector<virtio_blk_discard_write_zeroes>& segs, uint32_t len = 0) {
    auto b = fe.alloc(static_cast<uint32_t>(16 * segs.size() + 16));
    std::memcpy(b.host, segs.data(), 16 * segs.size());
    b.len = len ? len : static_cast<uint32_t>(16 * segs.size());
    return b;
}

uint8_t sync_status(Fe& fe, uint32_t type, Fe::Buf payload) {
    const auto tag = fe.submit(0, type, 0, {payload});
    if (!tag) return 0xfe;
    for (int i = 0; i < 50; ++i)
        for (const auto& c : fe.wait(100ms))
            if (c.tag == *tag) return c.status;
    return 0xfd;
}

// 5.2.6: a discard payload is whole 16-byte segments.
TEST_P(Hostile, DiscardPayloadNotWholeSegments) {
    Device dev;
    Fe fe(dev.opts());
    EXPECT_EQ(sync_status(fe, VIRTIO_BLK_T_DISCARD, discard_segments(fe, {{0, 8, 0}}, 20)), VIRTIO_BLK_S_IOERR);
    EXPECT_TRUE(dev.logged("discard/write-zeroes payload is not whole 16-byte segments: 20 bytes"));
    expect_served(dev, fe);
}

// 5.2.6.2: more segments than max_discard_seg (1) is UNSUPP; so is the
// unmap flag on a discard; a range past the capacity is IOERR.
TEST_P(Hostile, DiscardBadSegments) {
    Device dev;
    Fe fe(dev.opts());
    ASSERT_EQ(fe.config().max_discard_seg, 1u);
    EXPECT_EQ(sync_status(fe, VIRTIO_BLK_T_DISCARD, discard_segments(fe, {{0, 8, 0}, {64, 8, 0}})), VIRTIO_BLK_S_UNSUPP);
    EXPECT_EQ(sync_status(fe, VIRTIO_BLK_T_DISCARD, discard_segments(fe, {{0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP}})), VIRTIO_BLK_S_UNSUPP);
    EXPECT_EQ(sync_status(fe, VIRTIO_BLK_T_DISCARD, discard_segments(fe, {{kCapacity - 4, 8, 0}})), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(sync_status(fe, VIRTIO_BLK_T_WRITE_ZEROES, discard_segments(fe, {{UINT64_MAX - 2, 8, 0}})), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(sync_status(fe, VIRTIO_BLK_T_DISCARD, discard_segments(fe, {{0, 8, 0}})), VIRTIO_BLK_S_OK);
    expect_served(dev, fe);
}

// --- a queue reset mid-request --------------------------------------------------

// The driver stops the queue (GET_VRING_BASE, as QEMU does on a reset) while
// the device holds a request a fault rule put off: the stop answers at
// once, counting both requests taken, and the queue restarted from index 0
// serves again.
TEST_P(Hostile, QueueResetWhileARequestIsHeld) {
    Device dev({"--fault", "hold op=read sector=100..107"});
    Fe fe(dev.opts());
    auto a = fe.alloc(4096), b = fe.alloc(4096);
    const auto held = fe.submit(0, VIRTIO_BLK_T_IN, 100, {a});
    const auto other = fe.submit(0, VIRTIO_BLK_T_IN, 0, {b});
    ASSERT_TRUE(held && other);
    const auto done = fe.wait(5000ms);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].tag, *other);
    EXPECT_TRUE(fe.wait(200ms).empty()) << "the held read completed by itself";
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(fe.reset_queue(0), 2u);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s) << "GET_VRING_BASE waited for the held request";
    EXPECT_TRUE(dev.alive()) << dev.log_text();
    auto w = fe.alloc(4096), r = fe.alloc(4096);
    fill(w, 21);
    ASSERT_EQ(fe.write(0, w), VIRTIO_BLK_S_OK);
    ASSERT_EQ(fe.read(0, r), VIRTIO_BLK_S_OK);
    EXPECT_EQ(std::memcmp(w.host, r.host, 4096), 0);
}

INSTANTIATE_TEST_SUITE_P(ThreadModels, Hostile, ::testing::Values("per-queue", "single"),
                         [](const auto& info) { return info.param == "single" ? std::string("single") : std::string("per_queue"); });

}  // namespace
}  // namespace blkrig
