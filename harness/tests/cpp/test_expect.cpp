// Expectations: every property passing on a run that has it and failing on
// one that does not, with the first offender (seq, sector, file offset) in
// the message; and bad expectations rejected with where and which key.
#include "checks/expect.hpp"
#include "model/run_model.hpp"
#include "run_folder.hpp"
#include "scenario/scenario.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>

namespace blkrig::checks {
namespace {

using nlohmann::json;
using test::GuestOpts;
using test::RunFolder;

// /mnt/f.bin: 64 KiB in two extents, 32 KiB at sector 1000 and 32 KiB at 2000.
// Steps:
//   0 read: 16 KiB requests, one run per extent, mpage functions
//   1 read: per-page requests, then one crossing the extent gap
//   2 read: backward, a re-read, one failing with a fault, 2 segments
//   3 write: writes, then a flush (fsync done right)
//   4 write: a flush, then a write after it
//   5 write: writes and no flush
//   6 sync: nothing
class Expect : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        f_ = new RunFolder;
        auto& f = *f_;
        f.add_file("/f.bin", 65536, {{0, 1000, 64}, {32768, 2000, 64}});
        f.add_file("/tail.bin", 20480, {{0, 5000, 40}});
        f.begin_step("read", "/mnt/f.bin");
        f.function("mpage_readahead");
        f.function("do_mpage_readpage");
        f.read(1000, 32, test::merged({{1000, 16}, {1016, 16}}));
        f.read(1032, 32);
        f.read(2000, 32);
        f.read(2032, 32);
        f.end_step(0, 65536);
        f.begin_step("read", "/mnt/f.bin");
        f.function("block_read_full_folio");
        seq_page_ = f.read(1000, 8);
        f.read(1008, 8);
        f.read(1016, 8);
        f.read(1024, 8);
        seq_cross_ = f.read(1056, 952);  // the last 4 KiB of extent 0, the gap, the first 4 KiB of extent 1
        f.end_step();
        f.begin_step("read", "/mnt/f.bin");
        f.read(2000, 8);
        seq_back_ = f.read(1000, 8);
        seq_again_ = f.read(1008, 9);  // 4608 bytes, and extent 0 a second time... starts where the previous ended
        seq_fault_ = f.request(0, 1040, 8, {}, 1, trace::kStatusIoErr);
        f.fault(seq_fault_, 7, 1);
        seq_segs_ = f.request(0, 2040, 8, {}, 2);
        f.read(5000, 32);  // /tail.bin: 16 KiB
        f.read(5032, 8);   // and its last 4 KiB
        f.end_step();
        f.begin_step("write", "/mnt/f.bin");
        f.write(1000, 16);
        f.write(1016, 16);
        seq_flush_ = f.flush();
        f.end_step();
        f.begin_step("write", "/mnt/f.bin");
        f.flush();
        seq_late_write_ = f.write(1000, 16);
        f.end_step();
        f.begin_step("write", "/mnt/f.bin");
        f.write(1000, 8);
        seq_last_write_ = f.write(1008, 8);
        f.end_step();
        f.begin_step("sync");
        f.end_step();
        f.write();
        run_ = new model::Run(model::load_run(f.path()));
    }
    static void TearDownTestSuite() {
        delete run_;
        delete f_;
    }

    static CheckResult one(json table) {
        const auto rs = check(*run_, parse_expectation(table, "expectation"));
        EXPECT_EQ(rs.size(), 1u);
        return rs.at(0);
    }
    static json at(int step, json props) {
        props["step"] = step;
        props["file"] = "/mnt/f.bin";
        return props;
    }
    static std::string offender(uint64_t seq) { return fmt::format("first offender seq {} ", seq); }

    static RunFolder* f_;
    static model::Run* run_;
    static uint64_t seq_page_, seq_cross_, seq_back_, seq_again_, seq_fault_, seq_segs_, seq_flush_, seq_late_write_, seq_last_write_;
};
RunFolder* Expect::f_ = nullptr;
model::Run* Expect::run_ = nullptr;
uint64_t Expect::seq_page_, Expect::seq_cross_, Expect::seq_back_, Expect::seq_again_, Expect::seq_fault_, Expect::seq_segs_, Expect::seq_flush_,
    Expect::seq_late_write_, Expect::seq_last_write_;

#define EXPECT_PASS(r) EXPECT_TRUE((r).ok) << (r).message
#define EXPECT_FAIL(r, text)                                                                  \
    do {                                                                                      \
        const auto res_ = (r);                                                                \
        EXPECT_FALSE(res_.ok) << res_.message;                                                \
        EXPECT_NE(res_.message.find(text), std::string::npos) << "message: " << res_.message; \
    } while (0)

TEST_F(Expect, MultiPage) {
    EXPECT_PASS(one(at(0, {{"requests", "multi_page"}})));
    const auto r = one(at(1, {{"requests", "multi_page"}}));
    EXPECT_FAIL(r, "step 1 read /mnt/f.bin: 4 of 5 requests of 4096 bytes; expected multi-page requests; " + offender(seq_page_) +
                       "sector 1000 (file offset 0)");
    EXPECT_EQ(r.offender_seq, seq_page_);
    EXPECT_EQ(r.offenders, 4u);
    // A small last request that ends the file is allowed.
    EXPECT_PASS(one({{"step", 2}, {"file", "/mnt/tail.bin"}, {"requests", "multi_page"}}));
}

TEST_F(Expect, NoneAndSome) {
    EXPECT_PASS(one({{"step", 6}, {"requests", "none"}}));
    EXPECT_FAIL(one(at(0, {{"requests", "none"}})), "4 requests; expected no requests; first offender seq");
    EXPECT_PASS(one(at(0, {{"requests", "some"}})));
    EXPECT_FAIL(one({{"step", 6}, {"requests", "some"}}), "step 6 sync: 0 requests; expected some requests");
}

TEST_F(Expect, RequestBytes) {
    EXPECT_PASS(one(at(0, {{"max_request_bytes", 16384}})));
    EXPECT_FAIL(one(at(0, {{"max_request_bytes", 8192}})), "4 requests of 16384 bytes; expected at most 8192 bytes each; first offender seq");
    EXPECT_PASS(one(at(0, {{"min_request_bytes", 16384}})));
    EXPECT_FAIL(one(at(1, {{"min_request_bytes", 8192}})), "4 of 5 requests of 4096 bytes; expected at least 8192 bytes each; " + offender(seq_page_));
    EXPECT_PASS(one(at(0, {{"request_bytes_multiple_of", 4096}})));
    EXPECT_FAIL(one(at(2, {{"request_bytes_multiple_of", 4096}})), offender(seq_again_) + "sector 1008 (file offset 4096)");
    EXPECT_PASS(one(at(0, {{"file_offset_multiple_of", 16384}})));
    EXPECT_FAIL(one(at(1, {{"file_offset_multiple_of", 16384}})), offender(seq_page_ + 1) + "sector 1008 (file offset 4096)");
}

TEST_F(Expect, SegmentsCountsAndStatus) {
    EXPECT_PASS(one(at(0, {{"max_segments", 1}})));
    EXPECT_FAIL(one(at(2, {{"max_segments", 1}})), "with more than 1 segments (most 2); expected at most 1 segments each; " + offender(seq_segs_));
    EXPECT_PASS(one(at(0, {{"request_count_min", 4}})));
    EXPECT_FAIL(one(at(0, {{"request_count_min", 5}})), "4 requests; expected at least 5");
    EXPECT_FAIL(one(at(1, {{"request_count_max", 2}})), "5 requests; expected at most 2; " + offender(seq_page_ + 2));
    EXPECT_PASS(one(at(0, {{"status", "ok"}})));
    EXPECT_FAIL(one(at(2, {{"status", "ok"}})), "1 requests with status ioerr; expected status ok; " + offender(seq_fault_) + "sector 1040 (file offset 20480)");
}

TEST_F(Expect, Ascending) {
    EXPECT_PASS(one(at(0, {{"ascending", true}})));
    EXPECT_FAIL(one(at(2, {{"ascending", true}})), "1 backward seeks in 5 requests; expected ascending order");
    EXPECT_FAIL(one(at(2, {{"ascending", true}})), offender(seq_back_) + "sector 1000 (file offset 0) after seq " + std::to_string(seq_back_ - 1));
    // false asks for the opposite.
    EXPECT_PASS(one(at(2, {{"ascending", false}})));
    EXPECT_FAIL(one(at(0, {{"ascending", false}})), "expected it not to hold (ascending = false)");
}

TEST_F(Expect, ExtentGaps) {
    EXPECT_PASS(one(at(0, {{"split_at_extents", true}})));
    EXPECT_PASS(one(at(0, {{"no_request_crosses_extent_gap", true}})));
    const auto cross = one(at(1, {{"no_request_crosses_extent_gap", true}}));
    EXPECT_FAIL(cross, "1 of 5 requests cross an extent gap; expected no request crossing an extent gap; " + offender(seq_cross_) +
                           "sector 1056 (file offset 28672)");
    EXPECT_FAIL(one(at(1, {{"split_at_extents", true}})), offender(seq_cross_));
    // Step 2 reads extent 1 in two runs (2000+8, then 2040+8).
    EXPECT_FAIL(one(at(2, {{"split_at_extents", true}})), "read again or out of order");
}

TEST_F(Expect, CoversFile) {
    EXPECT_PASS(one(at(0, {{"covers_file", true}})));
    EXPECT_FAIL(one(at(2, {{"covers_file", true}})), "the first missing is file offset 8704");
}

TEST_F(Expect, MergeRatio) {
    // Step 0: 5 bios in 4 requests.
    EXPECT_PASS(one(at(0, {{"merge_ratio_min", 1.25}})));
    EXPECT_FAIL(one(at(0, {{"merge_ratio_min", 2}})), "1.25 bios per request over 4 matched requests; expected at least 2.00; first offender seq");
    EXPECT_FAIL(one(at(0, {{"merge_ratio_max", 1}})), "expected at most 1.00; first offender seq");
}

TEST_F(Expect, FunctionsHit) {
    EXPECT_PASS(one({{"step", 0}, {"functions_hit", json::array({"do_mpage_readpage", "mpage_readahead"})}}));
    EXPECT_FAIL(one({{"step", 1}, {"functions_hit", "do_mpage_readpage"}}), "not hit: do_mpage_readpage; hit: block_read_full_folio");
    EXPECT_PASS(one({{"step", 0}, {"functions_not_hit", "block_read_full_folio"}}));
    EXPECT_FAIL(one({{"step", 1}, {"functions_not_hit", "block_read_full_folio"}}), "hit: block_read_full_folio");
}

TEST_F(Expect, Faults) {
    EXPECT_PASS(one({{"step", 2}, {"faulted_requests_min", 1}}));
    EXPECT_FAIL(one({{"step", 0}, {"faulted_requests_min", 1}}), "0 of 4 requests hit by fault rules; expected at least 1");
    EXPECT_FAIL(one({{"step", 2}, {"faulted_requests_max", 0}}), offender(seq_fault_));
}

TEST_F(Expect, FlushAfterWrites) {
    EXPECT_PASS(one(at(3, {{"flush_after_writes", true}})));
    EXPECT_FAIL(one(at(4, {{"flush_after_writes", true}})), "1 of 1 writes completed after the last flush");
    EXPECT_FAIL(one(at(4, {{"flush_after_writes", true}})), offender(seq_late_write_));
    EXPECT_FAIL(one(at(5, {{"flush_after_writes", true}})), "2 writes and no flush; expected every write to complete before a flush");
    EXPECT_FAIL(one(at(5, {{"flush_after_writes", true}})), offender(seq_last_write_));
    EXPECT_FAIL(one({{"step", 6}, {"flush_after_writes", true}}), "no writes");
}

TEST_F(Expect, NoFindings) {
    EXPECT_PASS(one({{"no_findings", true}}));
    RunFolder f;
    f.begin_step("read");
    f.read(10, 8, test::unseen());
    f.end_step();
    f.write();
    const auto run = model::load_run(f.path());
    const auto r = check(run, parse_expectation({{"no_findings", true}}, "expectation"));
    EXPECT_FAIL(r.at(0), "never reached the device");
}

// A record no device writes is a finding, and fails the run's checks
// whatever the expectations say.
TEST_F(Expect, ImpossibleTraceRecordsFailEveryCheck) {
    RunFolder f;
    f.begin_step("read");
    f.read(10, 8);
    f.request(0, 18, 8, {}, 1, 7);  // status 7: no device answers that
    f.end_step();
    f.write();
    const auto run = model::load_run(f.path());
    ASSERT_EQ(run.trace_bad.size(), 1u);
    EXPECT_NE(run.trace_bad[0].find("(request seq 2): status: 7 is not a status"), std::string::npos) << run.trace_bad[0];
    EXPECT_TRUE(std::any_of(run.findings.begin(), run.findings.end(),
                            [](const std::string& s) { return s.find("impossible record") != std::string::npos; }));
    for (const auto& es : {std::vector<Expectation>{}, std::vector<Expectation>{parse_expectation({{"no_findings", true}}, "x")}}) {
        const auto rs = check_all(run, es);
        ASSERT_FALSE(rs.empty());
        EXPECT_EQ(rs[0].property, "valid_records");
        EXPECT_FALSE(rs[0].ok);
        EXPECT_NE(rs[0].message.find("1 impossible record (left out of the model); the first: record at byte"), std::string::npos) << rs[0].message;
    }
    EXPECT_TRUE(check_all(*run_, {}).empty());  // a good trace adds nothing
}

TEST_F(Expect, EmptySelectionFailsShapeChecks) {
    EXPECT_FAIL(one({{"step", 6}, {"max_request_bytes", 4096}}), "step 6 sync: no requests; expected requests to check");
}

TEST_F(Expect, SeveralPropertiesGiveSeveralResults) {
    const auto rs = check(*run_, parse_expectation(at(0, {{"split_at_extents", true}, {"max_request_bytes", 4096}}), "x"));
    ASSERT_EQ(rs.size(), 2u);
    EXPECT_EQ(rs[0].ok + rs[1].ok, 1);
}

// Bad expectations.
std::string parse_error(json table, std::map<std::string, int> lines = {}) {
    try {
        parse_expectation(table, "x.toml:3", "x.toml", lines);
    } catch (const ExpectError& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(ExpectParse, UnknownKeyNamesFileLineAndKey) {
    const auto e = parse_error({{"step", 1}, {"max_request_byte", 4096}}, {{"step", 4}, {"max_request_byte", 5}});
    EXPECT_NE(e.find("x.toml:5: expect.max_request_byte: unknown key"), std::string::npos) << e;
}

TEST(ExpectParse, WrongTypes) {
    EXPECT_NE(parse_error({{"max_request_bytes", "4K"}}).find("expect.max_request_bytes: must be an integer"), std::string::npos);
    EXPECT_NE(parse_error({{"ascending", 1}}).find("must be true or false"), std::string::npos);
    EXPECT_NE(parse_error({{"requests", "lots"}}).find("'lots' is not one of multi_page, none, some"), std::string::npos);
    EXPECT_NE(parse_error({{"step", -1}, {"ascending", true}}).find("expect.step"), std::string::npos);
    // 2^32 would have been step 0 once narrowed to an int.
    EXPECT_NE(parse_error({{"step", 4294967296}, {"ascending", true}}).find("expect.step: must be a step index"), std::string::npos);
    EXPECT_NE(parse_error({{"op", "reed"}, {"ascending", true}}).find("op 'reed' is not one of"), std::string::npos);
    EXPECT_NE(parse_error({{"functions_hit", json::array({1})}}).find("a function name or a list"), std::string::npos);
}

TEST(ExpectParse, PropertiesNeedTheirSelectors) {
    EXPECT_NE(parse_error({{"step", 1}, {"split_at_extents", true}}).find("needs file"), std::string::npos);
    EXPECT_NE(parse_error({{"flush_after_writes", true}}).find("needs step"), std::string::npos);
    EXPECT_NE(parse_error({{"step", 1}}).find("has no property"), std::string::npos);
}

TEST_F(Expect, UnknownStepOrFileAtCheckTime) {
    try {
        check(*run_, parse_expectation({{"step", 40}, {"ascending", true}}, "expectation 0"));
        FAIL() << "no error";
    } catch (const ExpectError& e) {
        EXPECT_NE(std::string(e.what()).find("expectation 0: expect.step 40: the run's steps are 0..6"), std::string::npos) << e.what();
    }
    try {
        check(*run_, parse_expectation({{"file", "/mnt/nope"}, {"ascending", true}}, "expectation 0"));
        FAIL() << "no error";
    } catch (const ExpectError& e) {
        EXPECT_NE(std::string(e.what()).find("file '/mnt/nope' is not in the image's extents.json (files: /mnt/f.bin, /mnt/tail.bin)"), std::string::npos)
            << e.what();
    }
}

TEST(ExpectToml, ScenarioTablesKeepTheirLines) {
    const auto sc = scenario::parse_scenario(R"([disk]
fs = "vfat"
[[disk.files]]
path = "/f.bin"
size = "64K"
[[steps]]
op = "mount"
[[steps]]
op = "read"
path = "/mnt/f.bin"

[[expect]]
step = 1
file = "/mnt/f.bin"
split_at_extents = true
max_request_bytes = 131072
)", "s.toml");
    ASSERT_EQ(sc.expects.size(), 1u);
    EXPECT_EQ(sc.expects[0].line, 12);
    EXPECT_EQ(sc.expects[0].key_lines.at("max_request_bytes"), 16);
    const auto es = parse_expectations(sc.expects, "s.toml");
    ASSERT_EQ(es.size(), 1u);
    EXPECT_EQ(es[0].where, "s.toml:12");
    ASSERT_EQ(es[0].properties.size(), 2u);
    EXPECT_EQ(es[0].properties[0].key, "split_at_extents");  // in the order written
    EXPECT_EQ(es[0].properties[1].where, "s.toml:16");
    EXPECT_NO_THROW(validate(es[0], sc));
    auto bad = es[0];
    bad.step = 5;
    EXPECT_THROW(validate(bad, sc), ExpectError);
    bad = es[0];
    bad.file = "/mnt/g.bin";
    EXPECT_THROW(validate(bad, sc), ExpectError);
}

TEST(ExpectToml, AFileOfExpectationsOnly) {
    TempDir d;
    {
        std::ofstream(d.file("e.toml")) << "[[expect]]\nstep = 0\nascending = true\n\n[[expect]]\nfile = \"/mnt/f.bin\"\ncovers_file = true\n";
        std::ofstream(d.file("bad.toml")) << "[[expect]]\nstep = 0\nascending = true\n[disk]\nfs = \"vfat\"\n";
    }
    const auto es = load_expectations(d.file("e.toml"));
    ASSERT_EQ(es.size(), 2u);
    EXPECT_EQ(es[1].where, d.file("e.toml") + ":5");
    try {
        load_expectations(d.file("bad.toml"));
        FAIL() << "no error";
    } catch (const ExpectError& e) {
        EXPECT_NE(std::string(e.what()).find("bad.toml:4:2: unknown key 'disk'"), std::string::npos) << e.what();
    }
    EXPECT_THROW(load_expectations(d.file("missing.toml")), ExpectError);
}

}  // namespace
}  // namespace blkrig::checks
