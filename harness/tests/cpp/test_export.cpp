// exporter: a small trace written with the real trace::Writer and read back,
// exported as blkparse text (exact lines, blkparse's field order), CSV
// (header, rows) and trace-event JSON (structure, lanes, instants).
#include "common/temp_dir.hpp"

#include "export/export.hpp"
#include "trace/reader.hpp"
#include "trace/writer.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

namespace blkrig::exporter {
namespace {

constexpr uint64_t kT0 = 5'000'000'000;  // the header's t_start_ns

trace::RequestRecord req(uint64_t seq, uint16_t queue, uint32_t type, uint64_t sector, std::vector<uint32_t> segs, uint64_t submit,
                         uint64_t complete, uint8_t status = trace::kStatusOk) {
    trace::RequestRecord r;
    r.seq = seq;
    r.queue = queue;
    r.type = type;
    r.sector = sector;
    for (auto s : segs) r.bytes += s;
    r.nsegs = static_cast<uint16_t>(segs.size());
    r.seg_lens = std::move(segs);
    r.t_submit_ns = kT0 + submit;
    r.t_complete_ns = kT0 + complete;
    r.status = status;
    r.head = static_cast<uint16_t>(seq);
    return r;
}

// Two queues: a write on q0 overlapped by a read on q0 (so two lanes), an
// ioerr read on q1 that a fault rule failed, a flush, a marker, a mark, and
// a slow read completing 1.5 s in. Written in completion order, as the
// device writes.
trace::Trace make_trace(const TempDir& dir, bool cut_end = false) {
    const std::string path = dir.file("trace.bin");
    trace::FileHeader h{};
    h.t_start_ns = kT0;
    h.capacity_sectors = 32768;
    h.logical_block_size = 512;
    h.num_queues = 2;
    {
        trace::Writer w(path, h, R"({"store":"ram"})");
        w.event({kT0 + 500, trace::EventCode::session_start, 0, 0, "front end connected"});
        w.record(req(1, 1, 0, 100, {4096}, 2'000, 3'000, trace::kStatusIoErr));
        w.fault({1, 3, 1, 0});
        w.record(req(0, 0, 1, 2048, {4096, 4096}, 1'000, 51'000));
        w.record(req(2, 0, 0, 64, {512}, 10'000, 20'000));
        w.record(req(3, 0, 4, 0, {}, 60'000, 70'000));
        w.marker({4, kT0 + 80'000, 1, 0, 9});
        w.event({kT0 + 90'000, trace::EventCode::mark, 0, 0, "step one"});
        w.record(req(5, 1, 0, 8, {4096}, 100'000, 1'500'100'000));
    }
    // Without its end record: what a killed device leaves.
    if (cut_end) std::filesystem::resize_file(path, std::filesystem::file_size(path) - sizeof(trace::RecordPrefix) - sizeof(trace::EndBody));
    return trace::read_trace(path);
}

TEST(Export, RwbsLettersAreTheKernels) {
    EXPECT_EQ(rwbs(0), "R");
    EXPECT_EQ(rwbs(1), "W");
    EXPECT_EQ(rwbs(4), "F");
    EXPECT_EQ(rwbs(11), "D");
    EXPECT_EQ(rwbs(13), "WZ");
    EXPECT_EQ(rwbs(14), "DE");
    EXPECT_EQ(rwbs(8), "N");  // get_id
    EXPECT_EQ(rwbs(trace::kTypeUnknown), "N");
    EXPECT_EQ(blk_error(trace::kStatusOk), 0);
    EXPECT_EQ(blk_error(trace::kStatusIoErr), -5);
    EXPECT_EQ(blk_error(trace::kStatusUnsupp), -95);
    EXPECT_EQ(blk_error(trace::kStatusNone), -5);
}

TEST(Export, FormatAndDeviceArguments) {
    EXPECT_EQ(parse_format("blkparse"), Format::blkparse);
    EXPECT_EQ(parse_format("perfetto"), Format::perfetto);
    EXPECT_EQ(parse_format("csv"), Format::csv);
    EXPECT_FALSE(parse_format("json"));
    EXPECT_FALSE(parse_format(""));
    auto d = parse_device("8,16");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->major, 8u);
    EXPECT_EQ(d->minor, 16u);
    EXPECT_FALSE(parse_device("254"));
    EXPECT_FALSE(parse_device("254,"));
    EXPECT_FALSE(parse_device("a,0"));
    EXPECT_FALSE(parse_device("254,0x"));
}

TEST(Export, BlkparseLinesInTimeOrderWithBlkparsesFields) {
    TempDir dir;
    const auto t = make_trace(dir);
    ASSERT_TRUE(t.complete()) << t.incompleteness();
    const std::vector<std::string> want = {
        "254,0    0        0     0.000000500     0  m   N session_start: front end connected",
        "254,0    0        0     0.000001000     0  Q   W 2048 + 16 [guest]",
        "254,0    0        0     0.000001000     0  D   W 2048 + 16 [guest]",
        "254,0    1        1     0.000002000     0  Q   R 100 + 8 [guest]",
        "254,0    1        1     0.000002000     0  D   R 100 + 8 [guest]",
        "254,0    1        0     0.000002000     0  m   N fault rule 3 ioerr seq 1",
        "254,0    1        1     0.000003000     0  C   R 100 + 8 [-5]",
        "254,0    0        2     0.000010000     0  Q   R 64 + 1 [guest]",
        "254,0    0        2     0.000010000     0  D   R 64 + 1 [guest]",
        "254,0    0        2     0.000020000     0  C   R 64 + 1 [0]",
        "254,0    0        0     0.000051000     0  C   W 2048 + 16 [0]",
        "254,0    0        3     0.000060000     0  Q   F [guest]",
        "254,0    0        3     0.000060000     0  D   F [guest]",
        "254,0    0        3     0.000070000     0  C   F 0 [0]",
        "254,0    0        0     0.000080000     0  m   N marker 1 seq 4",
        "254,0    0        0     0.000090000     0  m   N mark: step one",
        "254,0    1        5     0.000100000     0  Q   R 8 + 8 [guest]",
        "254,0    1        5     0.000100000     0  D   R 8 + 8 [guest]",
        "254,0    1        5     1.500100000     0  C   R 8 + 8 [0]",
    };
    std::vector<std::string> got;
    std::istringstream in(to_blkparse(t));
    for (std::string l; std::getline(in, l);) got.push_back(l);
    EXPECT_EQ(got, want);

    // blkparse's columns sit where "%D %2c %8s %5T.%9t %5p %2a %3d " puts them.
    const std::string& q = want[1];
    EXPECT_EQ(q.substr(0, 7), "254,0  ");
    EXPECT_EQ(q.substr(8, 2), " 0");
    EXPECT_EQ(q.substr(11, 8), "       0");
    EXPECT_EQ(q.substr(20, 15), "    0.000001000");
    EXPECT_EQ(q.substr(36, 5), "    0");
    EXPECT_EQ(q.substr(42, 2), " Q");
    EXPECT_EQ(q.substr(45, 3), "  W");

    Options o;
    o.major = 8, o.minor = 16;
    EXPECT_EQ(to_blkparse(t, o).substr(0, 22), "  8,16   0        0   ");
}

TEST(Export, CsvHeaderAndOneRowPerRequestInSeqOrder) {
    TempDir dir;
    const auto t = make_trace(dir);
    std::istringstream in(to_csv(t));
    std::vector<std::string> rows;
    for (std::string l; std::getline(in, l);) rows.push_back(l);
    ASSERT_EQ(rows.size(), 1 + t.requests.size());
    EXPECT_EQ(rows[0],
              "seq,queue,head,op,sector,sectors,bytes,nsegs,seg_lens,t_submit_ns,t_complete_ns,latency_ns,status,malformed,fault_rule,"
              "fault_action,fault_delay_ns");
    EXPECT_EQ(rows[1], "0,0,0,write,2048,16,8192,2,4096 4096,1000,51000,50000,ok,0,,,");
    EXPECT_EQ(rows[2], "1,1,1,read,100,8,4096,1,4096,2000,3000,1000,ioerr,0,3,ioerr,0");
    EXPECT_EQ(rows[4], "3,0,3,flush,0,0,0,0,,60000,70000,10000,ok,0,,,");
    EXPECT_EQ(rows[5].substr(0, 2), "5,");  // the marker (seq 4) is not a request
    for (const auto& r : rows) EXPECT_EQ(std::count(r.begin(), r.end(), ','), 16) << r;
}

TEST(Export, PerfettoSlicesLanesAndInstants) {
    TempDir dir;
    const auto t = make_trace(dir);
    const auto j = to_perfetto(t);
    EXPECT_EQ(j["displayTimeUnit"], "ns");
    EXPECT_EQ(j["otherData"]["complete"], true);
    const auto& ev = j["traceEvents"];
    ASSERT_TRUE(ev.is_array());
    std::map<uint64_t, std::string> threads;
    std::map<uint64_t, nlohmann::json> slices;  // by seq
    std::vector<nlohmann::json> instants;
    for (const auto& e : ev) {
        for (const char* k : {"name", "ph", "ts", "pid", "tid"}) ASSERT_TRUE(e.contains(k)) << k << " missing in " << e.dump();
        const std::string ph = e["ph"];
        if (ph == "M" && e["name"] == "thread_name") EXPECT_TRUE(threads.emplace(e["tid"].get<uint64_t>(), e["args"]["name"]).second);
        else if (ph == "X") slices[e["args"]["seq"].get<uint64_t>()] = e;
        else if (ph == "i") instants.push_back(e);
        else EXPECT_EQ(ph, "M") << e.dump();
    }
    // Seq 2 starts while seq 0 is in flight on queue 0: it goes to lane 1.
    // Seq 3 starts after both ended and goes back to lane 0.
    const std::map<uint64_t, std::string> want_threads = {{0, "queue 0"}, {1, "queue 1"}, {65536, "queue 0 lane 1"}};
    EXPECT_EQ(threads, want_threads);
    ASSERT_EQ(slices.size(), t.requests.size());
    EXPECT_EQ(slices[0]["tid"], 0);
    EXPECT_EQ(slices[2]["tid"], 65536);
    EXPECT_EQ(slices[3]["tid"], 0);
    EXPECT_EQ(slices[1]["tid"], 1);
    EXPECT_EQ(slices[5]["tid"], 1);
    EXPECT_DOUBLE_EQ(slices[0]["ts"].get<double>(), 1.0);
    EXPECT_DOUBLE_EQ(slices[0]["dur"].get<double>(), 50.0);
    EXPECT_DOUBLE_EQ(slices[5]["dur"].get<double>(), 1'500'000.0);
    EXPECT_EQ(slices[0]["name"], "write");
    EXPECT_EQ(slices[0]["args"]["sectors"], 16);
    EXPECT_EQ(slices[0]["args"]["seg_lens"], nlohmann::json::array({4096, 4096}));
    EXPECT_EQ(slices[1]["args"]["status"], "ioerr");
    EXPECT_EQ(slices[1]["args"]["fault_rule"], 3);
    EXPECT_EQ(slices[1]["args"]["fault_action"], "ioerr");
    EXPECT_FALSE(slices[0]["args"].contains("fault_rule"));

    // write() streams the same document, one event per line.
    std::ostringstream streamed;
    write(streamed, t, Format::perfetto);
    const std::string text = streamed.str();
    EXPECT_EQ(nlohmann::json::parse(text), j);
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), static_cast<long>(ev.size() + 2));

    std::set<std::string> names;
    for (const auto& i : instants) {
        ASSERT_TRUE(i.contains("s")) << i.dump();
        names.insert(i["name"]);
        if (i["name"] == "marker 1") {
            EXPECT_EQ(i["s"], "t");
        }
        if (i["name"] == "fault ioerr") {
            EXPECT_EQ(i["s"], "t");
            EXPECT_EQ(i["tid"], 1);
            EXPECT_DOUBLE_EQ(i["ts"].get<double>(), 2.0);
        }
        if (i["name"] == "mark: step one") {
            EXPECT_EQ(i["s"], "g");
        }
    }
    for (const auto& n : {"marker 1", "fault ioerr", "mark: step one", "session_start: front end connected"}) EXPECT_TRUE(names.count(n)) << n;
}

TEST(Export, IncompleteTraceStillExportsWhatItHas) {
    TempDir dir;
    const auto t = make_trace(dir, true);
    ASSERT_FALSE(t.complete());
    const auto j = to_perfetto(t);
    EXPECT_EQ(j["otherData"]["complete"], false);
    EXPECT_FALSE(j["otherData"]["incomplete_reason"].get<std::string>().empty());
    std::ostringstream out;
    write(out, t, Format::csv);
    const std::string csv = out.str();
    EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), static_cast<long>(1 + t.requests.size()));
}

}  // namespace
}  // namespace blkrig::exporter
