// Guestless data path: our front end drives a real back-end process over
// vhost-user, no guest. The same checks run against blkrig-device and against
// the reference peer qemu-storage-daemon, so a failure points at whichever
// side disagrees with the other.
#include "frontend/frontend.hpp"
#include "launch/process.hpp"
#include "control/rpc.hpp"
#include "trace/reader.hpp"

#include "faults/rule.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

namespace blkrig {
namespace {

namespace fs = std::filesystem;

fs::path build_dir() {
    const char* b = std::getenv("BLKRIG_BUILD_DIR");
    return b ? fs::path(b) : fs::canonical("/proc/self/exe").parent_path().parent_path().parent_path();
}

struct Backend {
    std::string kind;  // "blkrig", "blkrig-single" (--io-threads single) or "qsd"
    fs::path dir, image, socket, log, trace;
    launch::Child child;

    Backend(const std::string& k, uint64_t size, unsigned queues, const std::vector<std::string>& extra = {}) : kind(k) {
        char tmpl[] = "/tmp/blkrig-fe-XXXXXX";
        dir = ::mkdtemp(tmpl);
        image = dir / "disk.img", socket = dir / "s", log = dir / "backend.log", trace = dir / "trace.bin";
        { std::ofstream(image).close(); }
        fs::resize_file(image, size);
        start(queues, extra);
    }
    void start(unsigned queues, const std::vector<std::string>& extra = {}) {
        std::vector<std::string> argv;
        if (kind.starts_with("blkrig")) {
            argv = {(build_dir() / "qemu-device" / "blkrig-device").string(), "--socket-path", socket.string(), "--blk-file",
                    image.string(), "--trace", trace.string(), "--num-queues", std::to_string(queues)};
            if (kind == "blkrig-single") argv.push_back("--io-threads=single");
            if (kind == "blkrig-sync") argv.push_back("--io-engine=sync");
        } else {
            argv = {"qemu-storage-daemon", "--blockdev", fmt::format("driver=file,node-name=f0,filename={}", image.string()), "--export",
                    fmt::format("type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path={},writable=on,num-queues={}",
                                socket.string(), queues)};
        }
        argv.insert(argv.end(), extra.begin(), extra.end());
        child = launch::Child(kind, argv, log.string());
        for (int i = 0; i < 1000 && !fs::exists(socket); ++i) {
            if (child.poll()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (!fs::exists(socket)) throw std::runtime_error(kind + " did not listen:\n" + launch::tail_lines(log.string(), 10));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // qsd binds before it listens
    }
    ~Backend() {
        child.terminate(std::chrono::milliseconds(3000));
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    frontend::Options opts(uint16_t queues = 1) const {
        frontend::Options o;
        o.socket_path = socket.string();
        o.queues = queues;
        return o;
    }
};

class Guestless : public ::testing::TestWithParam<std::string> {};

void fill(frontend::Frontend::Buf b, uint32_t seed) {
    std::mt19937 rng(seed);
    for (uint32_t i = 0; i < b.len; ++i) b.host[i] = static_cast<uint8_t>(rng());
}

// Writes land on the image at the right offset and read back unchanged.
TEST_P(Guestless, WriteReadFlushRoundTrip) {
    Backend be(GetParam(), 16 << 20, 1);
    frontend::Frontend fe(be.opts());
    EXPECT_EQ(fe.capacity_sectors(), (16u << 20) / 512);
    auto w = fe.alloc(64 << 10), r = fe.alloc(64 << 10);
    fill(w, 7);
    ASSERT_EQ(fe.write(2048, w), VIRTIO_BLK_S_OK);
    ASSERT_EQ(fe.flush(), VIRTIO_BLK_S_OK);
    ASSERT_EQ(fe.read(2048, r), VIRTIO_BLK_S_OK);
    EXPECT_EQ(std::memcmp(w.host, r.host, w.len), 0);
    std::ifstream img(be.image, std::ios::binary);
    std::vector<char> on_disk(w.len);
    img.seekg(2048 * 512);
    img.read(on_disk.data(), static_cast<std::streamsize>(on_disk.size()));
    EXPECT_EQ(std::memcmp(on_disk.data(), w.host, w.len), 0);
}

// Past the capacity: IOERR from both.
TEST_P(Guestless, ReadPastCapacityIsIoerr) {
    Backend be(GetParam(), 1 << 20, 1);
    frontend::Frontend fe(be.opts());
    auto b = fe.alloc(4096);
    EXPECT_EQ(fe.read(fe.capacity_sectors() - 4, b), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(fe.read(fe.capacity_sectors() - 8, b), VIRTIO_BLK_S_OK);
}

// A front end that disconnects and reconnects gets a clean session: new
// memory, rings from index 0, and the data written before is still there.
TEST_P(Guestless, ReconnectGetsCleanSession) {
    Backend be(GetParam(), 4 << 20, 1);
    std::vector<uint8_t> first(8192);
    {
        frontend::Frontend fe(be.opts());
        auto w = fe.alloc(8192);
        fill(w, 3);
        std::memcpy(first.data(), w.host, w.len);
        for (int i = 0; i < 200; ++i) ASSERT_EQ(fe.write(16 * i, w), VIRTIO_BLK_S_OK);
        EXPECT_EQ(fe.stop_queue(0), 200);
    }
    frontend::Frontend fe(be.opts());
    auto r = fe.alloc(8192);
    ASSERT_EQ(fe.read(16 * 199, r), VIRTIO_BLK_S_OK);
    EXPECT_EQ(std::memcmp(first.data(), r.host, r.len), 0);
    EXPECT_EQ(fe.stop_queue(0), 1);  // the new session counted from 0
}

// Several queues in flight at once, each request on its own sectors.
TEST_P(Guestless, TwoQueuesInterleaved) {
    Backend be(GetParam(), 8 << 20, 2);
    frontend::Frontend fe(be.opts(2));
    std::vector<frontend::Frontend::Buf> bufs;
    for (int i = 0; i < 32; ++i) {
        bufs.push_back(fe.alloc(4096));
        fill(bufs.back(), 100 + i);
        ASSERT_TRUE(fe.submit(static_cast<uint16_t>(i % 2), VIRTIO_BLK_T_OUT, 8u * i, {bufs.back()}));
    }
    size_t done = 0;
    for (int spin = 0; spin < 100 && done < 32; ++spin)
        for (const auto& c : fe.wait(std::chrono::milliseconds(100))) {
            EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
            ++done;
        }
    ASSERT_EQ(done, 32u);
    for (int i = 0; i < 32; ++i) {
        auto r = fe.alloc(4096);
        ASSERT_EQ(fe.read(8u * i, r, static_cast<uint16_t>((i + 1) % 2)), VIRTIO_BLK_S_OK);
        EXPECT_EQ(std::memcmp(r.host, bufs[i].host, 4096), 0) << "request " << i;
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, Guestless, ::testing::Values("blkrig", "blkrig-single", "blkrig-sync", "qsd"),
                         [](const auto& info) {
                             std::string n = info.param;
                             std::replace(n.begin(), n.end(), '-', '_');
                             return n;
                         });

// blkrig-device's trace holds each request exactly once, with the queue it
// came on and its segments, as the front end sent them.
TEST(GuestlessTrace, EveryRequestOnceWithQueueAndSegments) {
    std::string trace_path;
    {
        Backend be("blkrig", 8 << 20, 2);
        trace_path = (be.dir.parent_path() / (be.dir.filename().string() + ".trace")).string();
        {
            frontend::Frontend fe(be.opts(2));
            auto a = fe.alloc(4096), b = fe.alloc(8192);
            for (int i = 0; i < 10; ++i) {
                ASSERT_TRUE(fe.submit(static_cast<uint16_t>(i % 2), VIRTIO_BLK_T_IN, 64u * i, {a, b}));
                size_t got = 0;
                while (got == 0) got = fe.wait(std::chrono::milliseconds(1000)).size();
            }
        }
        be.child.terminate(std::chrono::milliseconds(3000));
        fs::copy_file(be.trace, trace_path);
    }
    const auto t = trace::read_trace(trace_path);
    fs::remove(trace_path);
    ASSERT_TRUE(t.complete()) << t.incompleteness();
    ASSERT_EQ(t.requests.size(), 10u);
    // Records are written as requests complete, by each queue's thread: two
    // queues may interleave them. seq is the arrival order.
    auto reqs = t.requests;
    std::sort(reqs.begin(), reqs.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
    for (size_t i = 0; i < 10; ++i) {
        const auto& r = reqs[i];
        EXPECT_EQ(r.seq, i);
        EXPECT_EQ(r.queue, i % 2);
        EXPECT_EQ(r.sector, 64u * i);
        EXPECT_EQ(r.bytes, 12288u);
        EXPECT_EQ(r.seg_lens, (std::vector<uint32_t>{4096, 8192}));
        EXPECT_GE(r.t_complete_ns, r.t_submit_ns);
    }
}

}  // namespace
}  // namespace blkrig

namespace blkrig {
namespace {

launch::ToolResult fault_cli(const fs::path& ctl, std::vector<std::string> args) {
    std::vector<std::string> argv = {(build_dir() / "harness" / "blkrig").string(), "fault", "--control", ctl.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return launch::run_tool(argv, std::chrono::seconds(10));
}

// Faults changed while requests flow: a rule added over the control socket
// fails the next read of its sectors, its counters move, and once removed the
// same read succeeds. The trace marks the faulted request.
TEST(GuestlessControl, RulesAddedAndRemovedAtRunTime) {
    const std::string tag = std::to_string(::getpid());
    const fs::path ctl = fs::path("/tmp") / ("blkrig-ctl-" + tag + ".sock");
    std::string trace_path;
    {
        Backend be("blkrig", 4 << 20, 1, {"--control", ctl.string()});
        trace_path = (be.dir.parent_path() / (be.dir.filename().string() + ".trace")).string();
        ASSERT_EQ(fs::status(ctl).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
        frontend::Frontend fe(be.opts());
        auto b = fe.alloc(4096);
        ASSERT_EQ(fe.read(64, b), VIRTIO_BLK_S_OK);
        auto add = fault_cli(ctl, {"add", "ioerr op=read sector=64..71"});
        ASSERT_EQ(add.exit_code, 0) << add.output;
        EXPECT_NE(add.output.find("rule 1: ioerr op=read sector=64..71"), std::string::npos) << add.output;
        EXPECT_EQ(fe.read(64, b), VIRTIO_BLK_S_IOERR);
        EXPECT_EQ(fe.read(72, b), VIRTIO_BLK_S_OK);  // next to it: untouched
        auto list = fault_cli(ctl, {"list"});
        EXPECT_NE(list.output.find("   1          1          1  ioerr op=read sector=64..71"), std::string::npos) << list.output;
        auto bad = fault_cli(ctl, {"add", "ioerr op=reed"});
        EXPECT_EQ(bad.exit_code, 2);
        EXPECT_NE(bad.output.find("rule column 10: expected an op"), std::string::npos) << bad.output;
        const fs::path saved = be.dir / "rules.jsonl";
        ASSERT_EQ(fault_cli(ctl, {"save", saved.string()}).exit_code, 0);
        std::ifstream in(saved);
        std::string line;
        std::getline(in, line);
        EXPECT_EQ(line, R"({"jsonrpc":"2.0","method":"fault.add","params":{"rule":"ioerr op=read sector=64..71"}})");
        ASSERT_EQ(fault_cli(ctl, {"remove", "1"}).exit_code, 0);
        EXPECT_EQ(fe.read(64, b), VIRTIO_BLK_S_OK);
        EXPECT_EQ(fault_cli(ctl, {"remove", "1"}).exit_code, 2);  // already gone
        auto stats = fault_cli(ctl, {"stats"});
        EXPECT_NE(stats.output.find("\"errors\": 1"), std::string::npos) << stats.output;
        ASSERT_EQ(fault_cli(ctl, {"mark", "checkpoint"}).exit_code, 0);
        be.child.terminate(std::chrono::milliseconds(3000));
        fs::copy_file(be.trace, trace_path);
        EXPECT_FALSE(fs::exists(ctl)) << "control socket left behind";
    }
    const auto t = trace::read_trace(trace_path);
    fs::remove(trace_path);
    ASSERT_EQ(t.faults.size(), 1u);
    EXPECT_EQ(t.faults[0].rule_id, 1u);
    EXPECT_EQ(t.requests[t.faults[0].seq].status, trace::kStatusIoErr);
    bool marked = false;
    for (const auto& e : t.events) marked = marked || (e.code == trace::EventCode::mark && e.text == "checkpoint");
    EXPECT_TRUE(marked);
}

// Malformed, unknown and oversized JSON-RPC requests get errors; the control
// plane keeps answering.
TEST(GuestlessControl, BadRequestsGetJsonRpcErrors) {
    control::MethodTable m;
    m["ping"] = [](const nlohmann::json&) { return nlohmann::json("pong"); };
    auto code = [&](const std::string& line) { return control::handle_line(line, m)["error"]["code"].get<int>(); };
    EXPECT_EQ(code("{not json"), -32700);
    EXPECT_EQ(code(R"({"jsonrpc":"2.0","id":1})"), -32600);
    EXPECT_EQ(code(R"({"jsonrpc":"2.0","id":1,"method":"nope"})"), -32601);
    EXPECT_EQ(code(R"({"jsonrpc":"2.0","id":1,"method":"ping","params":[1]})"), -32602);
    EXPECT_EQ(code(std::string(70000, ' ')), -32600);
    EXPECT_EQ(control::handle_line(R"({"jsonrpc":"2.0","id":7,"method":"ping"})", m)["result"], "pong");
}

// Held, reordered and power-cut requests through the whole data path, with
// a thread per queue and with the shared epoll loop.
class GuestlessDeferred : public ::testing::TestWithParam<std::string> {};

TEST_P(GuestlessDeferred, HeldReadCompletesOnlyWhenReleasedAndLaterOnesOvertakeIt) {
    const fs::path ctl = fs::path("/tmp") / fmt::format("blkrig-ctl-{}-{}.sock", ::getpid(), GetParam());
    std::string trace_path;
    {
        Backend be(GetParam(), 4 << 20, 1, {"--control", ctl.string()});
        trace_path = (be.dir.parent_path() / (be.dir.filename().string() + ".trace")).string();
        {
        frontend::Frontend fe(be.opts());
        auto w = fe.alloc(4096);
        fill(w, 3);
        ASSERT_EQ(fe.write(0, w), VIRTIO_BLK_S_OK);
        ASSERT_EQ(fault_cli(ctl, {"add", "hold op=read first=1"}).exit_code, 0);
        auto a = fe.alloc(4096), b = fe.alloc(4096);
        const auto ta = fe.submit(0, VIRTIO_BLK_T_IN, 0, {a});
        const auto tb = fe.submit(0, VIRTIO_BLK_T_IN, 8, {b});
        ASSERT_TRUE(ta && tb);
        std::vector<frontend::Completed> done;
        for (int i = 0; i < 10 && done.empty(); ++i) done = fe.wait(std::chrono::milliseconds(100));
        ASSERT_EQ(done.size(), 1u);
        EXPECT_EQ(done[0].tag, *tb) << "the read after the held one did not overtake it";
        EXPECT_TRUE(fe.wait(std::chrono::milliseconds(300)).empty()) << "the held read completed by itself";
        const auto held = fault_cli(ctl, {"held"});
        EXPECT_NE(held.output.find(" read "), std::string::npos) << held.output;
        const auto rel = fault_cli(ctl, {"release"});
        ASSERT_EQ(rel.exit_code, 0) << rel.output;
        EXPECT_NE(rel.output.find("released 1 request(s)"), std::string::npos) << rel.output;
        done = fe.wait(std::chrono::milliseconds(5000));
        ASSERT_EQ(done.size(), 1u);
        EXPECT_EQ(done[0].tag, *ta);
        EXPECT_EQ(done[0].status, VIRTIO_BLK_S_OK);
        EXPECT_EQ(std::memcmp(a.host, w.host, 4096), 0) << "the held read returned the wrong data";
        EXPECT_EQ(fault_cli(ctl, {"release", "--seq", "999"}).exit_code, 2) << "releasing nothing by seq is an error";
        // Held when the front end goes away: the stopping queue completes it.
        ASSERT_EQ(fault_cli(ctl, {"add", "hold op=read"}).exit_code, 0);
        ASSERT_TRUE(fe.submit(0, VIRTIO_BLK_T_IN, 16, {b}));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        be.child.terminate(std::chrono::milliseconds(3000));
        fs::copy_file(be.trace, trace_path);
    }
    const auto t = trace::read_trace(trace_path);
    fs::remove(trace_path);
    bool flushed = false, released = false;
    for (const auto& e : t.events) {
        flushed = flushed || e.code == trace::EventCode::deferred_flushed;
        released = released || e.code == trace::EventCode::released;
    }
    EXPECT_TRUE(flushed) << "the read held at disconnect was not completed as the queue stopped";
    EXPECT_TRUE(released);
    size_t held = 0;
    for (const auto& f : t.faults) held += f.action == static_cast<uint16_t>(faults::ActionKind::hold);
    EXPECT_EQ(held, 2u);
}

// The unflushed write is lost, the flushed one kept; while the power is off
// every request fails with IOERR and is traced with a power_off fault mark.
TEST_P(GuestlessDeferred, PowerCutLosesTheUnflushedWriteOnly) {
    const fs::path ctl = fs::path("/tmp") / fmt::format("blkrig-ctl-{}-{}-cut.sock", ::getpid(), GetParam());
    std::string trace_path;
    {
    Backend be(GetParam(), 4 << 20, 1, {"--control", ctl.string(), "--crash-model"});
    trace_path = (be.dir.parent_path() / (be.dir.filename().string() + ".trace")).string();
    {
    frontend::Frontend fe(be.opts());
    auto x = fe.alloc(4096), y = fe.alloc(4096), r = fe.alloc(4096);
    fill(x, 1);
    fill(y, 2);
    ASSERT_EQ(fe.write(0, x), VIRTIO_BLK_S_OK);
    ASSERT_EQ(fe.flush(), VIRTIO_BLK_S_OK);
    ASSERT_EQ(fe.write(64, y), VIRTIO_BLK_S_OK);
    ASSERT_EQ(fe.read(64, r), VIRTIO_BLK_S_OK);
    EXPECT_EQ(std::memcmp(r.host, y.host, 4096), 0) << "the unflushed write is not visible before the cut";
    const auto stats = fault_cli(ctl, {"stats"});
    EXPECT_NE(stats.output.find("\"unflushed_writes\": 1"), std::string::npos) << stats.output;
    const auto cut = fault_cli(ctl, {"power-cut"});
    ASSERT_EQ(cut.exit_code, 0) << cut.output;
    EXPECT_NE(cut.output.find("\"sector\": 64"), std::string::npos) << cut.output;
    EXPECT_EQ(fe.read(0, r), VIRTIO_BLK_S_IOERR) << "a powered-off device served a read";
    EXPECT_EQ(fe.write(128, x), VIRTIO_BLK_S_IOERR) << "a powered-off device took a write";
    EXPECT_EQ(fe.flush(), VIRTIO_BLK_S_IOERR) << "a powered-off device flushed";
    EXPECT_EQ(fault_cli(ctl, {"power-cut"}).exit_code, 2) << "cutting twice";
    ASSERT_EQ(fault_cli(ctl, {"power-on"}).exit_code, 0);
    ASSERT_EQ(fe.read(0, r), VIRTIO_BLK_S_OK);
    EXPECT_EQ(std::memcmp(r.host, x.host, 4096), 0) << "the flushed write was lost";
    ASSERT_EQ(fe.read(64, r), VIRTIO_BLK_S_OK);
    EXPECT_EQ(std::vector<uint8_t>(r.host, r.host + 4096), std::vector<uint8_t>(4096, 0)) << "the unflushed write survived";
    }
    be.child.terminate(std::chrono::milliseconds(3000));
    fs::copy_file(be.trace, trace_path);
    }
    const auto t = trace::read_trace(trace_path);
    fs::remove(trace_path);
    ASSERT_TRUE(t.complete()) << t.incompleteness();
    // In arrival order: write, flush, write, read | cut | read, write, flush | on | read, read.
    auto reqs = t.requests;
    std::sort(reqs.begin(), reqs.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
    ASSERT_EQ(reqs.size(), 9u);
    std::map<uint64_t, trace::FaultRecord> marks;
    for (const auto& f : t.faults) marks[f.seq] = f;
    const std::vector<uint32_t> off_types = {VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH};
    for (size_t i = 0; i < reqs.size(); ++i) {
        const auto& q = reqs[i];
        const bool off = i >= 4 && i < 7;
        EXPECT_EQ(q.status, off ? trace::kStatusIoErr : trace::kStatusOk) << "seq " << q.seq;
        if (off) {
            EXPECT_EQ(q.type, off_types[i - 4]) << "seq " << q.seq;
            ASSERT_TRUE(marks.count(q.seq)) << "the IOERR of powered-off seq " << q.seq << " has no fault mark";
            EXPECT_EQ(marks[q.seq].rule_id, 0u);
            EXPECT_EQ(marks[q.seq].action, trace::kFaultPowerOff);
            EXPECT_STREQ(trace::fault_action_name(marks[q.seq].action), "power_off");
        } else {
            EXPECT_FALSE(marks.count(q.seq)) << "seq " << q.seq << " served with the power on carries a fault mark";
        }
    }
    EXPECT_EQ(t.faults.size(), 3u);
}

INSTANTIATE_TEST_SUITE_P(ThreadModels, GuestlessDeferred, ::testing::Values("blkrig", "blkrig-single", "blkrig-sync"),
                         [](const auto& info) {
                             return info.param == "blkrig" ? std::string("per_queue") : info.param == "blkrig-sync" ? std::string("sync_engine")
                                                                                                                    : std::string("single");
                         });

}  // namespace
}  // namespace blkrig
