// trace::Writer to a file and trace::read_trace back: records survive the
// round trip, and a trace that lost anything (cut short, no end record,
// dropped records) says so.
#include "common/temp_dir.hpp"

#include "trace/format.hpp"
#include "trace/reader.hpp"
#include "trace/writer.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace blkrig::trace {
namespace {

std::vector<uint8_t> slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spit(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Byte offsets of the records, found by following the length prefixes.
std::vector<size_t> record_offsets(const std::vector<uint8_t>& b) {
    FileHeader h;
    std::memcpy(&h, b.data(), sizeof h);
    size_t off = (sizeof h + h.config_json_len + 7) / 8 * 8;
    std::vector<size_t> out;
    while (off + sizeof(RecordPrefix) <= b.size()) {
        RecordPrefix p;
        std::memcpy(&p, b.data() + off, sizeof p);
        if (p.length == 0) break;
        out.push_back(off);
        off += p.length;
    }
    return out;
}

FileHeader header() {
    FileHeader h{};
    h.t_start_ns = 123456789;
    h.capacity_sectors = 2048;
    h.logical_block_size = 512;
    h.num_queues = 2;
    return h;
}

RequestRecord request(uint64_t seq, uint32_t type, std::vector<uint32_t> segs, uint8_t status = kStatusOk, uint16_t flags = 0) {
    RequestRecord r;
    r.seq = seq;
    r.sector = 1000 + seq * 8;
    r.bytes = 0;
    for (auto s : segs) r.bytes += s;
    r.t_submit_ns = 5000 + seq;
    r.t_complete_ns = 9000 + seq;
    r.type = type;
    r.queue = static_cast<uint16_t>(seq % 2);
    r.head = static_cast<uint16_t>(seq * 3);
    r.nsegs = static_cast<uint16_t>(segs.size());
    r.status = status;
    r.flags = flags;
    r.seg_lens = std::move(segs);
    return r;
}

void expect_same(const RequestRecord& got, const RequestRecord& want) {
    EXPECT_EQ(got.seq, want.seq);
    EXPECT_EQ(got.sector, want.sector);
    EXPECT_EQ(got.bytes, want.bytes);
    EXPECT_EQ(got.t_submit_ns, want.t_submit_ns);
    EXPECT_EQ(got.t_complete_ns, want.t_complete_ns);
    EXPECT_EQ(got.type, want.type);
    EXPECT_EQ(got.queue, want.queue);
    EXPECT_EQ(got.head, want.head);
    EXPECT_EQ(got.nsegs, want.nsegs);
    EXPECT_EQ(got.status, want.status);
    EXPECT_EQ(got.flags, want.flags);
    EXPECT_EQ(got.seg_lens, want.seg_lens);
}

class TraceTest : public ::testing::Test {
protected:
    // Three requests (odd and even segment counts, a malformed one) and an
    // event with text that needs padding, closed cleanly.
    void write_sample() {
        reqs_ = {request(0, 1, {1024, 3072}), request(1, 0, {512, 512, 512}, kStatusIoErr),
                 request(2, kTypeUnknown, {}, kStatusNone, kReqMalformed)};
        event_ = EventRecord{777, EventCode::queue_broken, 1, 9, "queue 1 head 9: hello"};
        Writer w(path_, header(), config_);
        w.record(reqs_[0]);
        w.record(reqs_[1]);
        w.event(event_);
        w.record(reqs_[2]);
        w.close();
        EXPECT_EQ(w.requests(), 3u);
        EXPECT_EQ(w.dropped(), 0u);
    }

    TempDir dir_;
    std::string path_ = dir_.file("sample.trace");
    std::string config_ = R"({"capacity":2048,"store":"ram"})";  // 31 bytes: records start after padding
    std::vector<RequestRecord> reqs_;
    EventRecord event_;
};

TEST_F(TraceTest, RoundTripKeepsEveryField) {
    write_sample();
    const auto t = read_trace(path_);
    EXPECT_TRUE(t.complete()) << t.incompleteness();
    EXPECT_TRUE(t.incompleteness().empty());
    EXPECT_TRUE(t.truncation.empty());

    EXPECT_EQ(std::memcmp(t.header.magic, kMagic, sizeof kMagic), 0);
    EXPECT_EQ(t.header.version, kVersion);
    EXPECT_EQ(t.header.t_start_ns, 123456789u);
    EXPECT_EQ(t.header.capacity_sectors, 2048u);
    EXPECT_EQ(t.header.logical_block_size, 512u);
    EXPECT_EQ(t.header.num_queues, 2u);
    EXPECT_EQ(t.config_json, config_);

    ASSERT_EQ(t.requests.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        SCOPED_TRACE(i);
        expect_same(t.requests[i], reqs_[i]);
    }
    ASSERT_EQ(t.events.size(), 1u);
    EXPECT_EQ(t.events[0].t_ns, event_.t_ns);
    EXPECT_EQ(t.events[0].code, event_.code);
    EXPECT_EQ(t.events[0].queue, event_.queue);
    EXPECT_EQ(t.events[0].head, event_.head);
    EXPECT_EQ(t.events[0].text, event_.text);

    ASSERT_TRUE(t.end.has_value());
    EXPECT_EQ(t.end->requests, 3u);
    EXPECT_EQ(t.end->dropped, 0u);
    EXPECT_TRUE(t.dropped.empty());

    // File order: request, request, event, request, end.
    ASSERT_EQ(t.order.size(), 5u);
    const RecordKind kinds[] = {RecordKind::request, RecordKind::request, RecordKind::event, RecordKind::request,
                                RecordKind::end};
    const size_t idx[] = {0, 1, 0, 2, 0};
    for (size_t i = 0; i < 5; ++i) {
        EXPECT_EQ(t.order[i].kind, kinds[i]) << i;
        EXPECT_EQ(t.order[i].index, idx[i]) << i;
    }
}

TEST_F(TraceTest, RecordsAreEightByteAligned) {
    write_sample();
    const auto b = slurp(path_);
    EXPECT_EQ(b.size() % 8, 0u);
    const auto offs = record_offsets(b);
    ASSERT_EQ(offs.size(), 5u);
    for (auto o : offs) EXPECT_EQ(o % 8, 0u);
}

TEST_F(TraceTest, FileCutInsideARecordIsTruncated) {
    write_sample();
    auto b = slurp(path_);
    const auto offs = record_offsets(b);
    ASSERT_EQ(offs.size(), 5u);
    b.resize(offs[3] + 20);  // inside the third request's body
    spit(path_, b);
    const auto t = read_trace(path_);
    EXPECT_FALSE(t.truncation.empty());
    EXPECT_FALSE(t.complete());
    EXPECT_EQ(t.incompleteness(), t.truncation);
    EXPECT_EQ(t.requests.size(), 2u) << "records before the cut are kept";
    EXPECT_EQ(t.events.size(), 1u);
    EXPECT_FALSE(t.end.has_value());
}

TEST_F(TraceTest, FileCutInsideARecordPrefixIsTruncated) {
    write_sample();
    auto b = slurp(path_);
    const auto offs = record_offsets(b);
    b.resize(offs[1] + 4);
    spit(path_, b);
    const auto t = read_trace(path_);
    EXPECT_NE(t.truncation.find("prefix"), std::string::npos) << t.truncation;
    EXPECT_EQ(t.requests.size(), 1u);
    EXPECT_FALSE(t.complete());
}

TEST_F(TraceTest, MissingEndRecordIsIncomplete) {
    write_sample();
    auto b = slurp(path_);
    const auto offs = record_offsets(b);
    b.resize(offs.back());  // exactly the end record removed
    spit(path_, b);
    const auto t = read_trace(path_);
    EXPECT_TRUE(t.truncation.empty()) << "the file ends on a record boundary";
    EXPECT_FALSE(t.end.has_value());
    EXPECT_EQ(t.requests.size(), 3u);
    EXPECT_FALSE(t.complete());
    EXPECT_NE(t.incompleteness().find("no end record"), std::string::npos) << t.incompleteness();
}

TEST_F(TraceTest, EndRecordCountingMoreRequestsThanPresentIsIncomplete) {
    write_sample();
    auto b = slurp(path_);
    const auto offs = record_offsets(b);
    // Drop the second request record (offs[1] .. offs[2]).
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(offs[1]), b.begin() + static_cast<std::ptrdiff_t>(offs[2]));
    spit(path_, b);
    const auto t = read_trace(path_);
    EXPECT_TRUE(t.truncation.empty());
    EXPECT_EQ(t.requests.size(), 2u);
    EXPECT_FALSE(t.complete());
    EXPECT_NE(t.incompleteness().find("end record counts 3"), std::string::npos) << t.incompleteness();
}

TEST_F(TraceTest, UnknownRecordKindIsSkipped) {
    write_sample();
    auto b = slurp(path_);
    const auto offs = record_offsets(b);
    // A 24-byte record of a kind this reader does not know, before the end record.
    std::vector<uint8_t> unknown(24, 0xab);
    const RecordPrefix p{24, 99, 0};
    std::memcpy(unknown.data(), &p, sizeof p);
    b.insert(b.begin() + static_cast<std::ptrdiff_t>(offs.back()), unknown.begin(), unknown.end());
    const auto t = parse_trace(b);
    EXPECT_TRUE(t.complete()) << t.incompleteness();
    EXPECT_EQ(t.requests.size(), 3u);
    EXPECT_EQ(t.order.size(), 5u);
}

TEST_F(TraceTest, WriterFallingBehindDropsAndSaysSo) {
    constexpr uint64_t kRecords = 20000;
    uint64_t dropped = 0, written = 0;
    {
        // Room for one pending record: the loop outruns the writer thread.
        Writer w(path_, header(), "", 64);
        for (uint64_t i = 0; i < kRecords; ++i) {
            RequestRecord r = request(i, 1, {4096});
            r.sector = 1000;  // inside the 2048-sector device whatever the seq
            w.record(r);
        }
        w.close();
        dropped = w.dropped();
        written = w.requests();
    }
    EXPECT_GT(dropped, 0u);
    EXPECT_EQ(written + dropped, kRecords);

    const auto t = read_trace(path_);
    EXPECT_TRUE(t.truncation.empty()) << t.truncation;
    ASSERT_TRUE(t.end.has_value());
    EXPECT_EQ(t.requests.size(), written);
    EXPECT_EQ(t.end->requests, written);
    EXPECT_EQ(t.end->dropped, dropped);
    EXPECT_EQ(t.dropped_total(), dropped) << "dropped records account for every lost record";
    EXPECT_FALSE(t.dropped.empty());
    EXPECT_FALSE(t.complete());
    EXPECT_NE(t.incompleteness().find("dropped"), std::string::npos) << t.incompleteness();
    // Records that made it keep their order.
    for (size_t i = 1; i < t.requests.size(); ++i) EXPECT_LT(t.requests[i - 1].seq, t.requests[i].seq);
}

TEST_F(TraceTest, RecordsAfterCloseAreNotWritten) {
    Writer w(path_, header(), "");
    w.record(request(0, 1, {512}));
    w.close();
    w.close();  // idempotent
    w.record(request(1, 1, {512}));
    const auto t = read_trace(path_);
    EXPECT_TRUE(t.complete()) << t.incompleteness();
    EXPECT_EQ(t.requests.size(), 1u);
}

TEST_F(TraceTest, SegmentListsAreCappedAndFlagged) {
    std::vector<uint32_t> segs(kMaxRecordedSegs + 10);
    for (size_t i = 0; i < segs.size(); ++i) segs[i] = static_cast<uint32_t>(512 * (i + 1));
    // 260 MiB: more than the 1 MiB device holds, so refused (a completed one would be impossible).
    const auto r = request(0, 1, segs, kStatusIoErr);
    {
        Writer w(path_, header(), "");
        w.record(r);
    }  // the destructor closes
    const auto t = read_trace(path_);
    EXPECT_TRUE(t.complete()) << t.incompleteness();
    ASSERT_EQ(t.requests.size(), 1u);
    EXPECT_EQ(t.requests[0].nsegs, kMaxRecordedSegs + 10);
    ASSERT_EQ(t.requests[0].seg_lens.size(), kMaxRecordedSegs);
    EXPECT_TRUE(std::equal(t.requests[0].seg_lens.begin(), t.requests[0].seg_lens.end(), segs.begin()));
    EXPECT_TRUE(t.requests[0].flags & kReqSegsTruncated);
}

TEST_F(TraceTest, BadMagicIsReadError) {
    write_sample();
    auto b = slurp(path_);
    b[0] = 'X';
    spit(path_, b);
    EXPECT_THROW(read_trace(path_), ReadError);
    EXPECT_THROW(parse_trace(b), ReadError);
}

TEST_F(TraceTest, UnsupportedVersionIsReadError) {
    write_sample();
    auto b = slurp(path_);
    const uint32_t v = kVersion + 1;
    std::memcpy(b.data() + offsetof(FileHeader, version), &v, 4);
    EXPECT_THROW(parse_trace(b), ReadError);
}

TEST_F(TraceTest, ShortHeaderIsReadError) {
    write_sample();
    auto b = slurp(path_);
    b.resize(sizeof(FileHeader) - 1);
    EXPECT_THROW(parse_trace(b), ReadError);
    b = slurp(path_);
    b.resize(sizeof(FileHeader) + 10);  // inside the configuration JSON
    EXPECT_THROW(parse_trace(b), ReadError);
}

TEST_F(TraceTest, MissingFileIsReadError) { EXPECT_THROW(read_trace(dir_.file("absent.trace")), ReadError); }

TEST_F(TraceTest, ContinuedTraceKeepsTheSeqSpaceAndCutsAPartialTail) {
    // A device killed mid-write: no end record, half a record at the end.
    write_sample();
    auto b = slurp(path_);
    const auto offs = record_offsets(b);
    b.resize(offs.back());
    const std::vector<uint8_t> half(b.begin() + static_cast<long>(offs[0]), b.begin() + static_cast<long>(offs[0]) + 20);
    b.insert(b.end(), half.begin(), half.end());
    spit(path_, b);
    auto w = Writer::open_continued(path_, header(), "{}");
    EXPECT_TRUE(w->continued());
    EXPECT_EQ(w->next_seq(), 3u);
    EXPECT_EQ(w->requests(), 3u);
    w->event(EventRecord{900, EventCode::restart, 0, 0, "restarted"});
    w->record(request(3, 1, {4096}));
    // Written through: in the file before close, as a killed device would leave it.
    const auto mid = read_trace(path_);
    EXPECT_TRUE(mid.truncation.empty()) << mid.truncation;
    EXPECT_EQ(mid.requests.size(), 4u);
    w->close();
    const auto t = read_trace(path_);
    EXPECT_TRUE(t.complete()) << t.incompleteness();
    ASSERT_EQ(t.requests.size(), 4u);
    EXPECT_EQ(t.requests[3].seq, 3u);
    EXPECT_EQ(t.events.back().code, EventCode::restart);
    EXPECT_EQ(t.config_json, config_) << "the first process's header stays";
}

TEST_F(TraceTest, ContinuingACleanTraceDropsItsEndRecordAndAMissingOneStartsFresh) {
    write_sample();
    {
        auto w = Writer::open_continued(path_, header(), config_);
        EXPECT_EQ(w->next_seq(), 3u);
        w->close();
    }
    const auto t = read_trace(path_);
    EXPECT_TRUE(t.complete()) << t.incompleteness();
    EXPECT_EQ(t.requests.size(), 3u);
    size_t ends = 0;
    for (const auto& e : t.order) ends += e.kind == RecordKind::end;
    EXPECT_EQ(ends, 1u);
    auto fresh = Writer::open_continued(dir_.file("new.trace"), header(), config_);
    EXPECT_FALSE(fresh->continued());
    EXPECT_EQ(fresh->next_seq(), 0u);
    fresh->close();
    EXPECT_TRUE(read_trace(dir_.file("new.trace")).complete());
    spit(dir_.file("junk.trace"), std::vector<uint8_t>(64, 'x'));
    EXPECT_THROW(Writer::open_continued(dir_.file("junk.trace"), header(), config_), TraceError);
}

TEST_F(TraceTest, UncreatableFileIsTraceError) {
    EXPECT_THROW(Writer(dir_.file("no/such/dir/t.trace"), header(), ""), TraceError);
}

TEST(TraceLabels, OpsStatusesAndEvents) {
    EXPECT_EQ(op_label(0), "read");
    EXPECT_EQ(op_label(13), "write_zeroes");
    EXPECT_EQ(op_label(99), "type_99");
    EXPECT_EQ(op_label(kTypeUnknown), "invalid");
    EXPECT_STREQ(status_label(kStatusUnsupp), "unsupp");
    EXPECT_STREQ(status_label(kStatusNone), "none");
    EXPECT_STREQ(event_name(EventCode::session_start), "session_start");
}

// A trace of the given records, in this order, closed cleanly.
Trace parse_records(const std::vector<RequestRecord>& reqs, const std::vector<MarkerRecord>& markers = {},
                    const std::vector<FaultRecord>& faults = {}, const std::vector<EventRecord>& events = {}) {
    std::vector<uint8_t> b(sizeof(FileHeader));
    FileHeader h = header();
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = kVersion;
    std::memcpy(b.data(), &h, sizeof h);
    for (const auto& r : reqs) encode(r, b);
    for (const auto& m : markers) encode(m, b);
    for (const auto& f : faults) encode(f, b);
    for (const auto& e : events) encode(e, b);
    encode_end(99999, reqs.size(), 0, b);
    return parse_trace(b);
}

// One impossible field per case: the record is left out and named.
TEST(TraceValidation, ImpossibleRequestsAreLeftOutAndNamed) {
    struct Case {
        const char* name;
        RequestRecord r;
        const char* field;
        const char* says;
    };
    auto with = [](auto change) {
        RequestRecord r = request(7, 0, {4096});
        change(r);
        return r;
    };
    const Case cases[] = {
        {"queue past num_queues", with([](RequestRecord& r) { r.queue = 65535; }), "queue", "65535, but the header says the device has 2 queue(s)"},
        {"completion before submission", with([](RequestRecord& r) { r.t_complete_ns = r.t_submit_ns - 1; }), "t_complete_ns",
         "completed before it was submitted"},
        {"unknown status", with([](RequestRecord& r) { r.status = 7; }), "status", "7 is not a status"},
        {"unknown flags", with([](RequestRecord& r) { r.flags = 0x40; }), "flags", "has bits no device sets"},
        {"ok on an unknown type", with([](RequestRecord& r) { r.type = 99; }), "type", "99 completed ok"},
        {"ok on a malformed request", with([](RequestRecord& r) { r.flags = kReqMalformed; }), "status", "malformed"},
        {"ok past the capacity", with([](RequestRecord& r) { r.sector = 2047; }), "sector", "2047 + 8 sectors ends past the capacity of 2048"},
        // 2^64-256 + (2^64-1)/512 sectors wraps to a small number: compared without wrapping.
        {"ok and wrapping", with([](RequestRecord& r) {
             r.sector = UINT64_MAX - 255;
             r.bytes = UINT64_MAX;
         }),
         "sector", "ends past the capacity"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        const Trace t = parse_records({request(6, 1, {512}), c.r});
        ASSERT_EQ(t.requests.size(), 1u);  // only the good one
        EXPECT_EQ(t.requests[0].seq, 6u);
        ASSERT_EQ(t.bad.size(), 1u);
        const BadRecord& b = t.bad[0];
        EXPECT_EQ(b.kind, RecordKind::request);
        EXPECT_EQ(b.seq, 7u);
        EXPECT_EQ(b.field, c.field);
        EXPECT_NE(b.message.find(c.says), std::string::npos) << b.message;
        // The second record, after the header (40 bytes, no JSON) and the first (8 prefix + 56, its one segment not repeated).
        EXPECT_EQ(b.offset, sizeof(FileHeader) + 64);
        EXPECT_NE(b.describe().find(fmt::format("record at byte {} (request seq 7): {}: ", b.offset, c.field)), std::string::npos) << b.describe();
        // Still counted against the end record: the trace is complete, its records are not all possible.
        EXPECT_TRUE(t.complete()) << t.incompleteness();
    }
}

// Version 2: a request of one segment of `bytes` is 64 bytes on disk and
// reads back with that segment; several segments, or one that is not the
// whole payload (a discard's range), keep their lengths.
TEST(TraceFormat, OneSegmentIsNotRepeated) {
    std::vector<uint8_t> one, two, partial;
    encode(request(1, 1, {4096}), one);
    encode(request(2, 0, {4096, 512}), two);
    RequestRecord d = request(3, 11, {512});
    d.bytes = 64 * 512;  // a discard's range: its length is not its bytes
    encode(d, partial);
    EXPECT_EQ(one.size(), 64u);
    EXPECT_EQ(two.size(), 72u);
    EXPECT_EQ(partial.size(), 72u);
    const Trace t = parse_records({request(1, 1, {4096}), request(2, 0, {4096, 512}), d});
    ASSERT_EQ(t.requests.size(), 3u) << (t.bad.empty() ? "" : t.bad[0].describe());
    EXPECT_EQ(t.requests[0].seg_lens, std::vector<uint32_t>{4096});
    EXPECT_EQ(t.requests[0].flags, 0u) << "the storage flag is not the request's";
    EXPECT_EQ(t.requests[1].seg_lens, (std::vector<uint32_t>{4096, 512}));
    EXPECT_EQ(t.requests[2].seg_lens, std::vector<uint32_t>{512});
}

// The flag is refused where it cannot hold, and in a version 1 trace,
// which is still read.
TEST(TraceFormat, OneSegmentFlagIsChecked) {
    auto trace_of = [](uint32_t version, uint16_t nsegs, uint16_t recorded, uint64_t bytes) {
        std::vector<uint8_t> b(sizeof(FileHeader));
        FileHeader h = header();
        std::memcpy(h.magic, kMagic, sizeof kMagic);
        h.version = version;
        std::memcpy(b.data(), &h, sizeof h);
        RecordPrefix p{static_cast<uint32_t>(sizeof(RecordPrefix) + sizeof(RequestBody)), static_cast<uint16_t>(RecordKind::request),
                       kReqOneSegment};
        RequestBody rb{};
        rb.seq = 5;
        rb.sector = 8;
        rb.bytes = bytes;
        rb.type = 0;
        rb.nsegs = nsegs;
        rb.nsegs_recorded = recorded;
        const auto* pp = reinterpret_cast<const uint8_t*>(&p);
        b.insert(b.end(), pp, pp + sizeof p);
        const auto* bp = reinterpret_cast<const uint8_t*>(&rb);
        b.insert(b.end(), bp, bp + sizeof rb);
        encode_end(99999, 1, 0, b);
        return parse_trace(b);
    };
    EXPECT_EQ(trace_of(2, 1, 0, 4096).requests.size(), 1u);
    for (const auto& t : {trace_of(1, 1, 0, 4096), trace_of(2, 2, 0, 4096), trace_of(2, 1, 0, uint64_t{1} << 33)}) {
        ASSERT_EQ(t.bad.size(), 1u);
        EXPECT_EQ(t.bad[0].field, "flags") << t.bad[0].describe();
    }
    // Version 1 without the flag reads as before.
    std::vector<uint8_t> b(sizeof(FileHeader));
    FileHeader h = header();
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = 1;
    std::memcpy(b.data(), &h, sizeof h);
    RequestRecord two = request(2, 0, {4096, 512});
    encode(two, b);
    encode_end(99999, 1, 0, b);
    const Trace t = parse_trace(b);
    ASSERT_EQ(t.requests.size(), 1u);
    EXPECT_EQ(t.requests[0].seg_lens, (std::vector<uint32_t>{4096, 512}));
}

// What the guest sent and the device refused is recorded as sent.
TEST(TraceValidation, RefusedRequestsMayNameAnything) {
    RequestRecord past = request(1, 0, {4096}, kStatusIoErr);
    past.sector = UINT64_MAX - 3;  // past the end, and wrapping
    RequestRecord unknown = request(2, 99, {}, kStatusUnsupp);
    RequestRecord malformed = request(3, kTypeUnknown, {}, kStatusNone, kReqMalformed);
    RequestRecord flush = request(4, 4, {});
    const Trace t = parse_records({past, unknown, malformed, flush});
    EXPECT_TRUE(t.bad.empty()) << t.bad[0].describe();
    EXPECT_EQ(t.requests.size(), 4u);
}

// A request a restarted device resumed from the inflight region carries
// kReqResubmitted: a flag the device sets, so the record is possible.
TEST(TraceValidation, ResubmittedRequestsArePossible) {
    const Trace t = parse_records({request(1, 1, {4096}, kStatusOk, kReqResubmitted)});
    EXPECT_TRUE(t.bad.empty()) << t.bad[0].describe();
    ASSERT_EQ(t.requests.size(), 1u);
    EXPECT_TRUE(t.requests[0].flags & kReqResubmitted);
}

// kReqMarker is the device's in-memory note that a read is a marker; a
// marker read that failed is traced as the request it is, without the bit.
TEST(TraceValidation, TheMarkerBitNeverReachesTheFile) {
    const Trace t = parse_records({request(1, 0, {512}, kStatusIoErr, kReqMarker)});
    EXPECT_TRUE(t.bad.empty()) << t.bad[0].describe();
    ASSERT_EQ(t.requests.size(), 1u);
    EXPECT_FALSE(t.requests[0].flags & kReqMarker);
}

TEST(TraceValidation, ImpossibleMarkersFaultsAndEvents) {
    const Trace t = parse_records({request(0, 0, {512})}, {{1, 10, 3, 0, 0}, {2, 11, 2048, 0, 0}, {3, 12, 4, 5, 0}},
                                  {{0, 1, 1, 0}, {0, 1, 77, 0}, {0, 0, 1, 0}, {0, 0, kFaultPowerOff, 0}},
                                  {{10, EventCode::mark, 0, 0, "ok"}, {11, static_cast<EventCode>(250), 0, 0, "?"}});
    EXPECT_EQ(t.markers.size(), 1u);
    EXPECT_EQ(t.faults.size(), 2u);
    EXPECT_EQ(t.events.size(), 1u);
    ASSERT_EQ(t.bad.size(), 5u);
    const std::pair<RecordKind, const char*> want[] = {{RecordKind::marker, "index"}, {RecordKind::marker, "queue"}, {RecordKind::fault, "action"},
                                                       {RecordKind::fault, "rule_id"}, {RecordKind::event, "code"}};
    for (size_t i = 0; i < 5; ++i) {
        EXPECT_EQ(t.bad[i].kind, want[i].first) << i;
        EXPECT_EQ(t.bad[i].field, want[i].second) << i << ": " << t.bad[i].describe();
    }
}

}  // namespace
}  // namespace blkrig::trace
