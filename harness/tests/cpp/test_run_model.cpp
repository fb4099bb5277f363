// The run model on synthetic run folders: steps placed between their
// markers, guest requests tied to device requests (and bios to requests),
// everything that does not match reported, the queries, and run folders
// that cannot be used failing with the file named.
#include "model/queries.hpp"
#include "model/run_model.hpp"
#include "model/trace_view.hpp"
#include "run_folder.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>


#include <algorithm>
#include <filesystem>
#include <random>

namespace blkrig::model {
namespace {

using test::GuestOpts;
using test::RunFolder;

bool any_contains(const std::vector<std::string>& v, const std::string& s) {
    return std::any_of(v.begin(), v.end(), [&](const std::string& x) { return x.find(s) != std::string::npos; });
}

std::string all(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += s + "\n";
    return out;
}

// mount, then a read of /f.bin (two extents: 64 sectors at 1000, 64 at 2000).
void two_step_read(RunFolder& f) {
    f.add_file("/f.bin", 65536, {{0, 1000, 64}, {32768, 2000, 64}});
    f.begin_step("mount");
    f.read(0, 1);
    f.end_step();
    f.begin_step("read", "/mnt/f.bin");
    f.function("mpage_readahead");
    f.function("do_mpage_readpage");
    f.read(1000, 32);
    f.read(1032, 32);
    f.read(2000, 64);
    f.end_step(0, 65536);
}

TEST(RunModel, StepsSitBetweenTheirMarkers) {
    RunFolder f;
    two_step_read(f);
    f.write();
    const model::Run run = load_run(f.path());
    ASSERT_EQ(run.steps.size(), 2u);
    EXPECT_EQ(run.steps[0].index, 0);
    EXPECT_EQ(run.steps[0].op, "mount");
    EXPECT_TRUE(run.steps[0].ok);
    // mount: marker 0 (seq 0), read (seq 1), marker 1 (seq 2).
    EXPECT_EQ(run.steps[0].first_seq, 1);
    EXPECT_EQ(run.steps[0].last_seq, 1);
    EXPECT_EQ(run.steps[1].path, "/mnt/f.bin");
    EXPECT_EQ(run.steps[1].bytes, 65536u);
    EXPECT_EQ(run.steps[1].first_seq, 4);
    EXPECT_EQ(run.steps[1].last_seq, 6);
    EXPECT_EQ(run.steps[1].req_end - run.steps[1].req_begin, 3u);
    EXPECT_TRUE(run.steps[1].guest_bracketed);
    EXPECT_EQ(run.requests.size(), 4u);  // markers are not requests
    EXPECT_EQ(run.requests[1].step, 1);
    EXPECT_TRUE(run.findings.empty()) << all(run.findings);
}

TEST(RunModel, GuestRequestsMatchDeviceRequestsWithTheirBios) {
    RunFolder f;
    f.add_file("/f.bin", 16384, {{0, 1000, 32}});
    f.begin_step("read", "/mnt/f.bin");
    // Four 4 KiB bios merged into one 16 KiB request.
    f.read(1000, 32, test::merged({{1000, 8}, {1008, 8}, {1016, 8}, {1024, 8}}, "RA"));
    f.end_step();
    f.write();
    const model::Run run = load_run(f.path());
    ASSERT_EQ(run.requests.size(), 1u);
    const auto& r = run.requests[0];
    ASSERT_GE(r.issue, 0);
    EXPECT_EQ(run.issues[static_cast<size_t>(r.issue)].request, 0);
    EXPECT_EQ(bio_count(run, r), 4u);
    EXPECT_EQ(guest_rwbs(run, r), "RA");
    EXPECT_TRUE(run.bios[run.issues[0].bios_begin + 1].merged);
    EXPECT_DOUBLE_EQ(merge_ratio(run, requests(run, {})), 4.0);
    EXPECT_TRUE(run.findings.empty()) << all(run.findings);
}

TEST(RunModel, SplitBiosArePiecesOfTheirRequests) {
    // One 512-sector bio split at 256: two requests, one piece each.
    RunFolder g;
    g.begin_step("read");
    g.guest({{"event", "block_bio_queue"}, {"dev", test::kDev}, {"rwbs", "R"}, {"sector", 4096}, {"nsect", 512}});
    g.guest({{"event", "block_split"}, {"dev", test::kDev}, {"rwbs", "R"}, {"sector", 4096}, {"new_sector", 4352}});
    g.guest({{"event", "block_rq_issue"}, {"dev", test::kDev}, {"rwbs", "R"}, {"sector", 4096}, {"nsect", 256}});
    g.guest({{"event", "block_rq_issue"}, {"dev", test::kDev}, {"rwbs", "R"}, {"sector", 4352}, {"nsect", 256}});
    g.read(4096, 256, test::untraced());
    g.read(4352, 256, test::untraced());
    g.end_step();
    g.write();
    const model::Run run = load_run(g.path());
    ASSERT_EQ(run.requests.size(), 2u);
    ASSERT_GE(run.requests[0].issue, 0);
    ASSERT_GE(run.requests[1].issue, 0);
    const auto& a = run.issues[static_cast<size_t>(run.requests[0].issue)];
    const auto& b = run.issues[static_cast<size_t>(run.requests[1].issue)];
    ASSERT_EQ(a.bios_count, 1u);
    ASSERT_EQ(b.bios_count, 1u);
    EXPECT_EQ(run.bios[a.bios_begin].sector, 4096u);
    EXPECT_EQ(run.bios[a.bios_begin].sectors, 256u);
    EXPECT_EQ(run.bios[b.bios_begin].sector, 4352u);
    EXPECT_EQ(run.bios[b.bios_begin].sectors, 256u);
    EXPECT_TRUE(run.findings.empty()) << all(run.findings);
}

TEST(RunModel, AGuestRequestTheDeviceNeverSawIsAFinding) {
    RunFolder f;
    f.begin_step("read");
    f.read(500, 8);
    f.read(508, 8, test::unseen());
    f.end_step();
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_TRUE(any_contains(run.findings, "1 requests the guest issued never reached the device")) << all(run.findings);
    EXPECT_TRUE(any_contains(run.findings, "read 508+8 (step 0")) << all(run.findings);
}

TEST(RunModel, ADeviceRequestTheGuestNeverIssuedIsAFinding) {
    RunFolder f;
    f.begin_step("read");
    f.read(500, 8);
    const uint64_t seq = f.read(700, 16, test::untraced());
    f.end_step();
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_TRUE(any_contains(run.findings, "1 device requests match no request the guest issued")) << all(run.findings);
    EXPECT_TRUE(any_contains(run.findings, fmt::format("seq {} read 700+16 (step 0)", seq))) << all(run.findings);
}

// Two queues, CPU 0 on queue 0 and CPU 1 on queue 1 (the agent's hello).
void two_queues(RunFolder& f) {
    f.hello({{"sysfs", {{"mq/0/cpu_list", "0"}, {"mq/0/nr_tags", "128"}, {"mq/1/cpu_list", "1"}, {"mq/1/nr_tags", "128"}}}});
}
GuestOpts on(int cpu, uint16_t queue) {
    GuestOpts g;
    g.cpu = cpu;
    g.queue = queue;
    return g;
}

TEST(RunModel, TheCpuMapComesFromSysfs) {
    EXPECT_EQ(queue_of_cpu(nlohmann::json{{"mq/0/cpu_list", "0,2"}, {"mq/1/cpu_list", "1,3-4"}, {"mq/1/nr_tags", "64"}}),
              (std::vector<int32_t>{0, 1, 0, 1, 1}));
    EXPECT_EQ(queue_of_cpu(nlohmann::json{{"mq/0/cpu_list", "1"}}), (std::vector<int32_t>{-1, 0}));
    EXPECT_TRUE(queue_of_cpu(nlohmann::json::object()).empty());
}

TEST(RunModel, RequestsOnTheQueueOfTheirCpuAreNoFinding) {
    RunFolder f;
    two_queues(f);
    f.begin_step("read");
    f.read(500, 8, on(0, 0));
    f.read(508, 8, on(1, 1));
    f.end_step();
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_EQ(run.queue_of_cpu, (std::vector<int32_t>{0, 1}));
    EXPECT_TRUE(run.findings.empty()) << all(run.findings);
    ASSERT_EQ(run.requests.size(), 2u);
    EXPECT_EQ(run.requests[1].queue, 1u);
    EXPECT_GE(run.requests[1].issue, 0);
}

TEST(RunModel, ARequestOnAnotherQueueThanItsCpusIsAFinding) {
    RunFolder f;
    two_queues(f);
    f.begin_step("read");
    f.read(500, 8, on(0, 0));
    const uint64_t seq = f.read(508, 8, on(1, 0));  // CPU 1 maps to queue 1, the device saw it on 0
    f.end_step();
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_TRUE(any_contains(run.findings, "1 device requests arrived on another queue than the one the guest CPU that issued them maps to"))
        << all(run.findings);
    EXPECT_TRUE(any_contains(run.findings, fmt::format("seq {} read 508+8 on queue 0, issued on guest CPU 1, which maps to queue 1", seq)))
        << all(run.findings);
}

TEST(RunModel, OfTwoEqualRequestsTheOneOnTheCpusQueueIsMatched) {
    // The same sectors read twice in a step, from each CPU: each issue is
    // tied to the device request on its own queue, whatever the order.
    RunFolder f;
    two_queues(f);
    f.begin_step("read");
    f.read(500, 8, on(1, 0));  // guest CPU 1 ...
    f.read(500, 8, on(0, 1));  // ... and CPU 0, the device records in the other order
    f.end_step();
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_TRUE(run.findings.empty()) << all(run.findings);
    ASSERT_EQ(run.issues.size(), 2u);
    EXPECT_EQ(run.issues[0].request, 1);
    EXPECT_EQ(run.issues[1].request, 0);
    // Without the map nothing is checked.
    RunFolder g;
    g.begin_step("read");
    g.read(508, 8, on(1, 0));
    g.end_step();
    g.write();
    EXPECT_TRUE(load_run(g.path()).findings.empty());
}

TEST(RunModel, RequestsFromBeforeTheGuestTraceAreNotesNotFindings) {
    RunFolder f;
    f.read(0, 1, test::untraced());  // firmware
    f.begin_step("sync");
    f.end_step();
    f.write(260, 1, test::untraced());  // at power-off, after the agent stopped tracing
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_TRUE(run.findings.empty()) << all(run.findings);
    EXPECT_TRUE(any_contains(run.notes, "seq 0 read 0+1")) << all(run.notes);
    EXPECT_TRUE(any_contains(run.notes, "after the guest trace's last marker")) << all(run.notes);
    EXPECT_TRUE(any_contains(run.notes, "seq 3 write 260+1")) << all(run.notes);
}

TEST(RunModel, ARequestAcrossAMarkerStillMatches) {
    // Two queues: the guest issued it inside step 0, the device took it after marker 1.
    RunFolder f;
    f.begin_step("write");
    f.guest({{"event", "block_bio_queue"}, {"dev", test::kDev}, {"rwbs", "W"}, {"sector", 900}, {"nsect", 8}});
    f.guest({{"event", "block_rq_issue"}, {"dev", test::kDev}, {"rwbs", "W"}, {"sector", 900}, {"nsect", 8}});
    f.end_step();
    f.write(900, 8, test::untraced());
    f.write();
    const model::Run run = load_run(f.path());
    ASSERT_EQ(run.requests.size(), 1u);
    EXPECT_GE(run.requests[0].issue, 0);
    EXPECT_TRUE(run.findings.empty()) << all(run.findings);
}

TEST(RunModel, ARequeuedRequestIsIssuedTwiceAndSeenOnce) {
    RunFolder f;
    f.begin_step("read");
    f.guest({{"event", "block_rq_issue"}, {"dev", test::kDev}, {"rwbs", "R"}, {"sector", 300}, {"nsect", 8}});
    f.guest({{"event", "block_rq_requeue"}, {"dev", test::kDev}, {"rwbs", "R"}, {"sector", 300}, {"nsect", 8}});
    f.read(300, 8, GuestOpts{});
    f.end_step();
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_TRUE(run.findings.empty()) << all(run.findings);
    EXPECT_TRUE(any_contains(run.notes, "requeued")) << all(run.notes);
}

TEST(RunModel, ASeqTheDeviceNeverCompletedIsAFinding) {
    RunFolder f;
    two_step_read(f);
    f.skip_seq();
    f.read(3000, 8);
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_TRUE(any_contains(run.findings, "no record for 1 seq(s)")) << all(run.findings);
}

// Seq accounting over a trace that spans device restarts: each seq once.
trace::RequestRecord rec(uint64_t seq, uint16_t flags = 0) {
    trace::RequestRecord r;
    r.seq = seq;
    r.type = 1;
    r.status = trace::kStatusOk;
    r.flags = flags;
    return r;
}

TEST(SeqAccounting, AResubmittedRequestCountsOnceUnderItsFirstSeq) {
    trace::Trace t;
    // Seq 2 was in flight at the crash: the next process completes it after 3 and 4.
    for (uint64_t s : {0, 1, 3}) t.requests.push_back(rec(s));
    t.markers.push_back({4, 0, 0, 0, 0});
    t.requests.push_back(rec(2, trace::kReqResubmitted));
    t.events.push_back({0, trace::EventCode::restart, 0, 0, "restarted"});
    const auto s = summarize(t);
    EXPECT_EQ(s.restarts, 1u);
    EXPECT_EQ(s.resubmitted, 1u);
    EXPECT_EQ(s.seq_duplicate_count, 0u);
    EXPECT_EQ(s.seq_missing_count, 0u);
    EXPECT_NE(to_text(s).find("1 device restart(s); 1 request(s) resubmitted"), std::string::npos) << to_text(s);
}

TEST(SeqAccounting, AnUnfinishedRequestHasItsSeqButNoLatencyAndIsNoError) {
    trace::Trace t;
    auto done = rec(0);
    done.t_submit_ns = 1000;
    done.t_complete_ns = 3000;
    t.requests.push_back(done);
    // Seq 1 was held when the device ended; seq 2 was left by one process and resumed by the next.
    auto left = rec(1, trace::kReqUnfinished);
    left.status = trace::kStatusNone;
    left.t_submit_ns = 2000;
    left.t_complete_ns = 9'000'000'000;
    t.requests.push_back(left);
    t.requests.push_back(rec(2, trace::kReqUnfinished));
    t.requests.push_back(rec(2, trace::kReqResubmitted));
    const auto s = summarize(t);
    EXPECT_EQ(s.unfinished, 2u);
    EXPECT_EQ(s.seq_duplicate_count, 0u);
    EXPECT_EQ(s.seq_missing_count, 0u);
    EXPECT_EQ(s.ops.at("write").errors, 0u);
    EXPECT_EQ(s.latency_max_ns, 2000u) << "an unfinished request's wait is not a latency";
    EXPECT_NE(to_text(s).find("2 request(s) left in flight, never completed"), std::string::npos) << to_text(s);
    EXPECT_EQ(to_json(s)["unfinished"], 2);
}

TEST(SeqAccounting, TwiceCompletedAndNeverCompletedSeqsAreCountedAndNamed) {
    trace::Trace t;
    for (uint64_t s : {0, 1, 1, 4, 5, 5, 5}) t.requests.push_back(rec(s));
    t.requests.push_back(rec(1'000'000'000'000ull));  // a huge gap is counted, not listed
    const auto s = summarize(t);
    EXPECT_EQ(s.seq_duplicate_count, 3u);
    EXPECT_EQ(s.seq_duplicates, (std::vector<uint64_t>{1, 5, 5}));
    EXPECT_EQ(s.seq_missing_count, 2u + (1'000'000'000'000ull - 6));
    EXPECT_EQ(s.seq_missing, (std::vector<uint64_t>{2, 3, 6, 7, 8}));
    EXPECT_NE(to_text(s).find("completed more than once, e.g. 1, 5, 5"), std::string::npos) << to_text(s);
    EXPECT_EQ(to_json(s)["seq_missing"], s.seq_missing_count);
}

TEST(SeqAccounting, DenseSeqsCountedInOnePassAgreeWithTheSort) {
    // The same multiset of records, once dense (the one-pass count) and once
    // with a far seq appended (the sort): the counts below it must agree.
    std::mt19937_64 rng(7);
    for (int round = 0; round < 50; ++round) {
        trace::Trace dense;
        for (uint64_t q = 0; q < 200; ++q) {
            const auto k = rng() % 5;  // 0: missing, 1: once, 2: twice, 3: unfinished then resubmitted, 4: unfinished only
            if (k == 0) continue;
            dense.requests.push_back(rec(q, k >= 3 ? trace::kReqUnfinished : 0));
            if (k == 2) dense.requests.push_back(rec(q));
            if (k == 3) dense.requests.push_back(rec(q, trace::kReqResubmitted));
        }
        std::shuffle(dense.requests.begin(), dense.requests.end(), rng);
        auto sparse = dense;
        sparse.requests.push_back(rec(1'000'000'000'000ull));
        const auto a = summarize(dense), b = summarize(sparse);
        EXPECT_EQ(a.seq_duplicate_count, b.seq_duplicate_count) << "round " << round;
        EXPECT_EQ(a.seq_duplicates, b.seq_duplicates) << "round " << round;
        EXPECT_EQ(a.seq_missing, b.seq_missing) << "round " << round;
        uint64_t top = 0;
        for (const auto& r : dense.requests) top = std::max(top, r.seq);
        EXPECT_EQ(b.seq_missing_count - a.seq_missing_count, 1'000'000'000'000ull - top - 1) << "round " << round;
    }
}

TEST(RunModel, AnOverrunGuestTraceIsAFinding) {
    RunFolder f;
    f.begin_step("read");
    f.read(500, 8);
    f.end_step();
    f.guest_line(R"({"event":"unparsed","raw":"CPU:0 [LOST 42 EVENTS]"})");
    f.events_txt("# tracer: function\n#\n# entries-in-buffer/entries-written: 100/250   #P:1\n");
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_TRUE(any_contains(run.findings, "held 100 of 250 events")) << all(run.findings);
    EXPECT_TRUE(any_contains(run.findings, "42 lost events")) << all(run.findings);
}

TEST(RunModel, FaultsAreAttachedToTheirRequest) {
    RunFolder f;
    f.begin_step("read");
    f.read(500, 8);
    const uint64_t seq = f.request(0, 508, 8, {}, 1, trace::kStatusIoErr);
    f.fault(seq, 3, 1);
    f.end_step(-1);
    f.write();
    const model::Run run = load_run(f.path());
    const Request* r = run.by_seq(seq);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->fault_rule, 3u);
    EXPECT_EQ(r->fault_action, 1);
    EXPECT_EQ(r->status, trace::kStatusIoErr);
    const auto hits = fault_hits(requests(run, {0, "read"}));
    ASSERT_EQ(hits.size(), 1u);
    EXPECT_EQ(hits[0]->seq, seq);
    EXPECT_FALSE(run.steps[0].ok);
    EXPECT_EQ(run.steps[0].error, "EIO");
}

TEST(RunModel, FileViewMapsRequestsToFileOffsets) {
    RunFolder f;
    two_step_read(f);
    f.write();
    const model::Run run = load_run(f.path());
    const int fi = file_or_throw(run, "/mnt/f.bin");
    EXPECT_EQ(file_or_throw(run, "/f.bin"), fi);
    const auto hits = file_requests(run, fi, {1, "read"});
    ASSERT_EQ(hits.size(), 3u);
    EXPECT_EQ(hits[0].file_offset, 0u);
    EXPECT_EQ(hits[1].file_offset, 16384u);
    EXPECT_EQ(hits[2].file_offset, 32768u);
    EXPECT_EQ(hits[2].extent, 1u);
    EXPECT_EQ(hits[2].file_bytes, 32768u);
    EXPECT_FALSE(hits[2].crosses_extent);
    // Request::file is set for every request touching a file.
    EXPECT_EQ(run.requests[2].file, fi);
    EXPECT_EQ(run.requests[2].file_offset, 16384u);
    EXPECT_EQ(run.requests[0].file, -1);  // the mount's read of sector 0

    const Request* at = request_at(run, fi, 40000, {1, "read"});
    ASSERT_NE(at, nullptr);
    EXPECT_EQ(at->sector, 2000u);
    EXPECT_EQ(request_at(run, fi, 40000, {1, "write"}), nullptr);
    EXPECT_EQ(request_at(run, fi, 1 << 20, {1, "read"}), nullptr);  // past the end
    EXPECT_EQ(sector_of(run.files[static_cast<size_t>(fi)], 32768 + 513), 2001u);
}

TEST(RunModel, OrderingSizesAndSegments) {
    RunFolder f;
    f.begin_step("read");
    f.request(0, 100, 8, {}, 2);
    f.request(0, 108, 8, {}, 2);
    f.request(0, 200, 16, {}, 1);  // a forward gap: still ascending
    f.request(0, 150, 8, {}, 1);   // backward
    f.flush();                     // no sectors: left out of the order
    f.request(0, 158, 8, {}, 1);
    f.end_step();
    f.write();
    const model::Run run = load_run(f.path());
    const auto all_reqs = requests(run, {0, std::nullopt});
    EXPECT_EQ(all_reqs.size(), 6u);
    EXPECT_EQ(requests(run, {0, "flush"}).size(), 1u);
    EXPECT_EQ(requests(run, {0, "data"}).size(), 5u);
    const auto runs = contiguous_runs(all_reqs);
    ASSERT_EQ(runs.size(), 3u);
    EXPECT_EQ(runs[0], (std::vector<uint64_t>{1, 2}));
    EXPECT_EQ(runs[2], (std::vector<uint64_t>{4, 6}));
    const auto asc = ascending_runs(all_reqs);
    ASSERT_EQ(asc.size(), 2u);
    EXPECT_EQ(asc[0], (std::vector<uint64_t>{1, 2, 3}));
    EXPECT_EQ(backward_seeks(all_reqs), 1u);
    const auto sizes = size_histogram(requests(run, {0, "read"}));
    EXPECT_EQ(sizes.at(4096), 4u);
    EXPECT_EQ(sizes.at(8192), 1u);
    const auto segs = segment_histogram(requests(run, {0, "read"}));
    EXPECT_EQ(segs.at(2), 2u);
    EXPECT_EQ(segs.at(1), 3u);
    EXPECT_TRUE(run.findings.empty()) << all(run.findings);
}

TEST(RunModel, FunctionsHitPerStep) {
    RunFolder f;
    two_step_read(f);
    f.write();
    const model::Run run = load_run(f.path());
    EXPECT_TRUE(functions_hit(run, 0).empty());
    EXPECT_EQ(functions_hit(run, 1), (std::set<std::string>{"mpage_readahead", "do_mpage_readpage"}));
    EXPECT_EQ(functions_hit(run, std::nullopt).size(), 2u);
    EXPECT_THROW(functions_hit(run, 7), QueryError);
    // The step's guest events come back as the JSON objects of the file.
    const auto ev = run.guest_json(run.steps[1].guest_begin, run.steps[1].guest_end);
    ASSERT_FALSE(ev.empty());
    EXPECT_EQ(ev.front()["function"], "mpage_readahead");
}

TEST(RunModel, TheScenarioNumbersTheSteps) {
    // A run folder of an older version: it added a FIEMAP after the first
    // mount, so agent steps are 0 mount, 1 fiemap, 2 read.
    RunFolder f;
    f.add_file("/f.bin", 4096, {{0, 1000, 8}});
    f.scenario(R"([disk]
fs = "vfat"
[[disk.files]]
path = "/f.bin"
size = "4K"
[[steps]]
op = "mount"
[[steps]]
op = "read"
path = "/mnt/f.bin"
)");
    f.begin_step("mount");
    f.end_step();
    f.begin_step("fiemap", "/mnt/f.bin");
    f.end_step();
    f.begin_step("read", "/mnt/f.bin");
    f.read(1000, 8);
    f.end_step();
    f.write();
    const model::Run run = load_run(f.path());
    ASSERT_EQ(run.steps.size(), 3u);
    EXPECT_EQ(run.steps[1].index, -1);
    EXPECT_EQ(run.steps[2].index, 1);
    ASSERT_NE(run.step(1), nullptr);
    EXPECT_EQ(run.step(1)->op, "read");
    EXPECT_EQ(requests(run, {1, std::nullopt}).size(), 1u);
    EXPECT_EQ(step_label(*run.step(1)), "step 1 read /mnt/f.bin");
}

TEST(RunModel, GuestEventsParseFastAndSlowPathsAlike) {
    const std::string text =
        R"({"cpu":0,"dev":"254,0","event":"block_rq_issue","nsect":8,"raw":"254,0 R 4096 () 100 + 8 [dd]","rwbs":"R","sector":100,"ts":1.5})" "\n"
        R"({"ts": 1.6, "event": "block_rq_issue", "dev": "254,0", "rwbs": "W\u0053", "sector": 7, "nsect": 1, "extra": [1, 2]})" "\n"
        "not json\n";
    const auto g = parse_guest_events(text);
    ASSERT_EQ(g.events.size(), 2u);
    EXPECT_EQ(g.events[0].kind, GuestKind::rq_issue);
    EXPECT_EQ(g.events[0].sector, 100u);
    EXPECT_EQ(g.events[0].nsect, 8u);
    EXPECT_DOUBLE_EQ(g.events[0].ts, 1.5);
    EXPECT_EQ(g.name(g.events[0].dev), "254,0");
    EXPECT_EQ(g.events[1].rwbs_view(), "WS");
    EXPECT_EQ(g.events[1].op, GuestOp::write);
    EXPECT_EQ(g.events[1].line, 2u);
    EXPECT_EQ(g.bad_line_count, 1u);
    ASSERT_EQ(g.bad_lines.size(), 1u);
    EXPECT_EQ(g.bad_lines[0].first, 3u);

    // The same event on the fast path and (forced by a list) the slow one.
    const std::string fast = R"({"comm":"a\"b","dev":"8,0","error":-5,"event":"block_rq_complete","nsect":16,"rwbs":"WFS","sector":77,"ts":12.25})";
    const std::string slow = R"({"comm":"x","dev":"8,0","error":-5,"event":"block_rq_complete","nsect":16,"rwbs":"WFS","sector":77,"ts":12.25,"l":[1]})";
    const auto a = parse_guest_events(fast + "\n" + slow + "\n");
    ASSERT_EQ(a.events.size(), 2u);
    for (const auto& e : a.events) {
        EXPECT_EQ(e.kind, GuestKind::rq_complete);
        EXPECT_EQ(e.error, -5);
        EXPECT_EQ(e.sector, 77u);
        EXPECT_EQ(e.nsect, 16u);
        EXPECT_EQ(e.rwbs_view(), "WFS");
        EXPECT_DOUBLE_EQ(e.ts, 12.25);
        EXPECT_EQ(a.name(e.dev), "8,0");
    }
    EXPECT_EQ(a.events[1].offset, fast.size() + 1);
    // Two halves parsed apart and appended number lines and names as one parse does.
    auto first = parse_guest_events(fast + "\n");
    append(first, parse_guest_events(slow + "\n", fast.size() + 1));
    ASSERT_EQ(first.events.size(), 2u);
    EXPECT_EQ(first.events[1].line, 2u);
    EXPECT_EQ(first.events[1].offset, fast.size() + 1);
    EXPECT_EQ(first.name(first.events[1].name), "block_rq_complete");
}

TEST(RunModel, RwbsNamesTheOperation) {
    EXPECT_EQ(parse_rwbs("RA").op, GuestOp::read);
    EXPECT_EQ(parse_rwbs("WS").op, GuestOp::write);
    EXPECT_TRUE(parse_rwbs("FWS").preflush);
    EXPECT_EQ(parse_rwbs("FWS").op, GuestOp::write);
    EXPECT_EQ(parse_rwbs("FF").op, GuestOp::flush);
    EXPECT_EQ(parse_rwbs("F").op, GuestOp::flush);
    EXPECT_TRUE(parse_rwbs("WFS").fua);
    EXPECT_EQ(parse_rwbs("DE").op, GuestOp::secure_erase);
    EXPECT_EQ(parse_rwbs("D").op, GuestOp::discard);
    EXPECT_EQ(parse_rwbs("N").op, GuestOp::other);
}

// Bad run folders: the error names the file and says what is wrong.
class BadRunFolder : public ::testing::Test {
protected:
    void SetUp() override {
        two_step_read(f_);
        f_.write();
    }
    std::string error() {
        try {
            load_run(f_.path());
        } catch (const RunError& e) {
            return e.what();
        }
        return "(no error)";
    }
    RunFolder f_;
};

TEST_F(BadRunFolder, MissingTrace) {
    std::filesystem::remove(f_.file("trace.bin"));
    EXPECT_NE(error().find("trace.bin: missing"), std::string::npos) << error();
}

TEST_F(BadRunFolder, TraceCutInsideARecord) {
    f_.chop("trace.bin", 40);  // the end record (32 bytes) and part of the last marker
    EXPECT_NE(error().find("trace.bin: the trace is cut short"), std::string::npos) << error();
    LoadOptions o;
    o.allow_truncated_trace = true;
    const model::Run run = load_run(f_.path(), o);
    EXPECT_TRUE(any_contains(run.findings, "cut short")) << all(run.findings);
}

TEST_F(BadRunFolder, TraceWithoutEndRecordIsAFinding) {
    f_.chop("trace.bin", 32);
    const model::Run run = load_run(f_.path());
    EXPECT_TRUE(any_contains(run.findings, "the device trace is incomplete: no end record")) << all(run.findings);
}

TEST_F(BadRunFolder, NotATrace) {
    f_.put("trace.bin", "hello");
    EXPECT_NE(error().find("trace.bin: not a blkrig trace"), std::string::npos) << error();
}

TEST_F(BadRunFolder, MissingGuestEvents) {
    std::filesystem::remove(f_.file("guest-events.jsonl"));
    EXPECT_NE(error().find("guest-events.jsonl: missing"), std::string::npos) << error();
}

TEST_F(BadRunFolder, MissingRunJson) {
    std::filesystem::remove(f_.file("run.json"));
    EXPECT_NE(error().find("run.json: missing"), std::string::npos) << error();
}

TEST_F(BadRunFolder, ExtentsWithoutSectors) {
    f_.put("extents.json", R"({"files":[{"path":"/f.bin","size_bytes":4096,"extents":[{"file_offset":0,"sector":8}]}]})");
    EXPECT_NE(error().find("extents.json: files[0].extents[0] has no \"sectors\""), std::string::npos) << error();
}

TEST_F(BadRunFolder, ResultsForAStepThatWasNotRun) {
    f_.put("results.jsonl", R"({"type":"step","index":9,"op":"read","ret":0})" "\n");
    EXPECT_NE(error().find("results.jsonl: line 1: step index 9"), std::string::npos) << error();
}

TEST_F(BadRunFolder, ScenarioThatDoesNotMatchRunJson) {
    f_.put("scenario.toml", "[disk]\nfs = \"raw\"\n[[steps]]\nop = \"sync\"\n");
    EXPECT_NE(error().find("scenario.toml: does not match run.json"), std::string::npos) << error();
}

TEST_F(BadRunFolder, NotAFolder) {
    EXPECT_THROW(load_run(f_.file("nothing-here")), RunError);
}

}  // namespace
}  // namespace blkrig::model
