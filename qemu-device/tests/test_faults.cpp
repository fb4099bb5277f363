// Fault rules: the grammar (each mistake names its column) and the engine's
// matching and counting.
#include "faults/effect.hpp"
#include "faults/engine.hpp"
#include "faults/rule.hpp"
#include "faults/rule_file.hpp"

#include <gtest/gtest.h>
#include <linux/virtio_blk.h>

#include <set>

namespace blkrig::faults {
namespace {

Rule parse_ok(const std::string& text) {
    auto r = parse_rule(text);
    if (auto* e = std::get_if<RuleError>(&r)) ADD_FAILURE() << text << ": column " << e->column << ": " << e->message;
    return std::get<Rule>(r);
}

RuleError parse_bad(const std::string& text) {
    auto r = parse_rule(text);
    EXPECT_TRUE(std::holds_alternative<RuleError>(r)) << text << " parsed";
    return std::holds_alternative<RuleError>(r) ? std::get<RuleError>(r) : RuleError{};
}

TEST(FaultRule, ParsesEveryKey) {
    const Rule r = parse_ok("ioerr op=read,write sector=264..271 queue=1 nth=3");
    EXPECT_EQ(r.action.kind, ActionKind::ioerr);
    EXPECT_EQ(r.ops, kOpRead | kOpWrite);
    EXPECT_EQ(r.first_sector, 264u);
    EXPECT_EQ(r.last_sector, 271u);
    EXPECT_EQ(*r.queue, 1);
    EXPECT_EQ(r.nth, 3u);
    const Rule d = parse_ok("delay=50ms op=write every=2");
    EXPECT_EQ(d.action.kind, ActionKind::delay);
    EXPECT_EQ(d.action.delay_ns, 50'000'000u);
    EXPECT_EQ(d.every, 2u);
    const Rule p = parse_ok("unsupp op=flush sector=1000.. prob=0.25 seed=7");
    EXPECT_EQ(p.last_sector, UINT64_MAX);
    EXPECT_DOUBLE_EQ(p.probability, 0.25);
    EXPECT_EQ(p.seed, 7u);
}

TEST(FaultRule, CanonicalTextParsesBackToTheSameRule) {
    for (const char* t : {"ioerr", "ioerr op=read sector=264..271", "delay=1us op=write queue=2 first=4", "unsupp sector=5.. prob=0.5 seed=3"}) {
        const Rule a = parse_ok(t);
        const Rule b = parse_ok(to_text(a));
        EXPECT_EQ(to_text(a), to_text(b)) << t;
    }
}

TEST(FaultRule, ErrorsNameTheColumn) {
    struct Case {
        const char* text;
        size_t column;
        const char* says;
    } cases[] = {
        {"", 1, "expected an action"},
        {"explode", 1, "expected an action"},
        {"ioerr op=rd", 10, "expected an op"},
        {"ioerr op=read,bogus", 15, "expected an op"},
        {"ioerr sector=x", 14, "expected a sector"},
        {"ioerr sector=9..3", 14, "empty sector range"},
        {"ioerr prob=1.5", 12, "probability"},
        {"ioerr prob=0", 12, "probability"},
        {"ioerr nth=0", 11, "count of 1 or more"},
        {"ioerr colour=red", 7, "unknown key 'colour'"},
        {"ioerr op", 7, "expected key=value"},
        {"delay=fast", 7, "expected a duration"},
        {"ioerr nth=2 every=3", 1, "at most one of"},
    };
    for (const auto& c : cases) {
        const RuleError e = parse_bad(c.text);
        EXPECT_EQ(e.column, c.column) << c.text << ": " << e.message;
        EXPECT_NE(e.message.find(c.says), std::string::npos) << c.text << ": " << e.message;
    }
}

TEST(FaultEngine, MatchesOpRangeAndQueue) {
    Engine e;
    const uint32_t id = e.add(parse_ok("ioerr op=read sector=100..107 queue=0"));
    EXPECT_FALSE(e.decide(0, 92, 8, 0).fire);   // ends at 99
    EXPECT_TRUE(e.decide(0, 96, 8, 0).fire);    // overlaps 100..103
    EXPECT_TRUE(e.decide(0, 107, 1, 0).fire);
    EXPECT_FALSE(e.decide(0, 108, 8, 0).fire);
    EXPECT_FALSE(e.decide(1, 100, 8, 0).fire);  // a write
    EXPECT_FALSE(e.decide(0, 100, 8, 1).fire);  // another queue
    const auto d = e.decide(0, 100, 8, 0);
    EXPECT_EQ(d.rule_id, id);
    const auto l = e.list();
    ASSERT_EQ(l.size(), 1u);
    EXPECT_EQ(l[0].matched, 3u);
    EXPECT_EQ(l[0].fired, 3u);
}

TEST(FaultEngine, NthEveryFirstAndFlushes) {
    Engine e;
    e.add(parse_ok("ioerr op=write nth=2"));
    EXPECT_FALSE(e.decide(1, 0, 8, 0).fire);
    EXPECT_TRUE(e.decide(1, 0, 8, 0).fire);
    EXPECT_FALSE(e.decide(1, 0, 8, 0).fire);
    e.clear();
    e.add(parse_ok("unsupp op=flush every=2"));
    EXPECT_FALSE(e.decide(4, 0, 0, 0).fire);
    EXPECT_EQ(e.decide(4, 0, 0, 0).action.kind, ActionKind::unsupp);
    e.clear();
    e.add(parse_ok("ioerr first=2"));
    int fired = 0;
    for (int i = 0; i < 5; ++i) fired += e.decide(0, 0, 1, 0).fire;
    EXPECT_EQ(fired, 2);
    // A ranged rule never matches a flush, which has no sectors.
    e.clear();
    e.add(parse_ok("ioerr sector=0..10"));
    EXPECT_FALSE(e.decide(4, 0, 0, 0).fire);
}

TEST(FaultEngine, ProbabilityIsReproducibleFromTheSeed) {
    auto run = [](uint64_t seed) {
        Engine e;
        e.add(parse_ok("ioerr prob=0.3 seed=" + std::to_string(seed)));
        std::string pattern;
        for (int i = 0; i < 200; ++i) pattern += e.decide(0, i, 1, 0).fire ? '1' : '0';
        return pattern;
    };
    EXPECT_EQ(run(5), run(5));
    EXPECT_NE(run(5), run(6));
    const auto p = run(5);
    const auto ones = std::count(p.begin(), p.end(), '1');
    EXPECT_GT(ones, 30);
    EXPECT_LT(ones, 90);
}

TEST(FaultEngine, FirstFiringRuleDecidesAllMatchingCount) {
    Engine e;
    const uint32_t a = e.add(parse_ok("delay=1ms op=read"));
    e.add(parse_ok("ioerr op=read"));
    const auto d = e.decide(0, 0, 8, 0);
    EXPECT_EQ(d.rule_id, a);
    const auto l = e.list();
    EXPECT_EQ(l[0].fired, 1u);
    EXPECT_EQ(l[1].matched, 1u);
    EXPECT_EQ(l[1].fired, 0u);
    EXPECT_TRUE(e.remove(a));
    EXPECT_FALSE(e.remove(a));
    EXPECT_EQ(e.decide(0, 0, 8, 0).action.kind, ActionKind::ioerr);
}

TEST(FaultEngine, AfterMarkerArmsTheRuleAtThatBoundary) {
    Engine e;
    e.add(parse_ok("ioerr after_marker=5"));
    EXPECT_FALSE(e.decide(0, 0, 8, 0).fire);
    e.marker(4);
    EXPECT_FALSE(e.decide(0, 0, 8, 0).fire);
    e.marker(5);
    EXPECT_TRUE(e.decide(0, 0, 8, 0).fire);
    e.marker(2);  // markers only move forward
    EXPECT_TRUE(e.decide(0, 0, 8, 0).fire);
    EXPECT_EQ(e.list()[0].matched, 2u);  // not counted while unarmed
}

TEST(FaultEngine, UntilMarkerDisarmsForGood) {
    Engine e;
    e.add(parse_ok("ioerr after_marker=1 until_marker=4"));
    EXPECT_FALSE(e.decide(0, 0, 8, 0).fire);
    e.marker(1);
    EXPECT_TRUE(e.decide(0, 0, 8, 0).fire);
    e.marker(4);
    EXPECT_FALSE(e.decide(0, 0, 8, 0).fire);
    const RuleError bad = parse_bad("ioerr after_marker=4 until_marker=4");
    EXPECT_NE(bad.message.find("could never match"), std::string::npos);
}

// The sector index must not change which rule decides: with many rules in
// many buckets, plus wide ones, the first in id order still wins, and
// requests across bucket boundaries see rules on both sides.
TEST(FaultEngine, IndexKeepsIdOrderAcrossBucketsAndWideRules) {
    Engine e;
    std::vector<uint32_t> ids;
    for (uint64_t k = 0; k < 1000; ++k) ids.push_back(e.add(parse_ok("ioerr op=read sector=" + std::to_string(k * 100000) + ".." +
                                                                     std::to_string(k * 100000 + 7))));
    const uint32_t wide = e.add(parse_ok("unsupp op=read"));  // later id: loses to the narrow ones
    for (uint64_t k : {0ull, 1ull, 500ull, 999ull}) {
        const auto d = e.decide(0, k * 100000 + 4, 8, 0);
        EXPECT_EQ(d.rule_id, ids[k]) << k;
    }
    EXPECT_EQ(e.decide(0, 50, 8, 0).rule_id, wide);  // between rules: only the wide one
    EXPECT_FALSE(e.decide(1, 0, 8, 0).fire);          // a write: no rule for writes
    // A request straddling a 32 MiB bucket boundary (sector 65536) sees a rule just past it.
    const uint32_t edge = e.add(parse_ok("ioerr op=write sector=65536..65536"));
    EXPECT_EQ(e.decide(1, 65530, 16, 0).rule_id, edge);
    // A huge request (many buckets) still finds the rules inside it.
    EXPECT_EQ(e.decide(0, 8, 1ull << 30, 0).rule_id, ids[1]);  // starts just past rule 0
    EXPECT_TRUE(e.remove(ids[500]));
    EXPECT_EQ(e.decide(0, 500 * 100000 + 4, 8, 0).rule_id, wide);
}

}  // namespace
}  // namespace blkrig::faults

namespace blkrig::faults {
namespace {

TEST(FaultRuleActions, ParsesHoldReorderTornCorruptLieAndRandomDelay) {
    EXPECT_EQ(parse_ok("hold op=read").action.kind, ActionKind::hold);
    const Rule ro = parse_ok("reorder");
    EXPECT_EQ(ro.action.kind, ActionKind::reorder);
    EXPECT_EQ(ro.action.count, 1u);
    EXPECT_EQ(parse_ok("reorder=3").action.count, 3u);
    const Rule t = parse_ok("torn=8");
    EXPECT_EQ(t.action.kind, ActionKind::torn);
    EXPECT_EQ(t.action.count, 8u);
    EXPECT_FALSE(t.action.torn_ok);
    EXPECT_EQ(t.ops, kOpWrite) << "torn applies to writes";
    EXPECT_TRUE(parse_ok("torn=0:ok").action.torn_ok);
    const Rule c = parse_ok("corrupt=4096:0x01 op=read");
    EXPECT_EQ(c.action.kind, ActionKind::corrupt);
    EXPECT_EQ(c.action.offset, 4096u);
    EXPECT_EQ(c.action.mask, 1);
    EXPECT_EQ(parse_ok("corrupt=7").action.mask, 0xff);
    EXPECT_EQ(parse_ok("lie op=flush").action.kind, ActionKind::lie);
    const Rule k = parse_ok("crash op=write nth=500");
    EXPECT_EQ(k.action.kind, ActionKind::crash);
    EXPECT_EQ(k.nth, 500u);
    EXPECT_EQ(to_text(k), "crash op=write nth=500");
    const Rule d = parse_ok("delay=10ms..80ms seed=4");
    EXPECT_EQ(d.action.delay_ns, 10'000'000u);
    EXPECT_EQ(d.action.delay_max_ns, 80'000'000u);
    const Rule w = parse_ok("ioerr time=2s..5s depth=4");
    EXPECT_EQ(w.time_from_ns, 2'000'000'000u);
    EXPECT_EQ(w.time_to_ns, 5'000'000'000u);
    EXPECT_EQ(w.min_depth, 4u);
    EXPECT_EQ(parse_ok("ioerr time=500ms..").time_to_ns, UINT64_MAX);
}

TEST(FaultRuleActions, CanonicalTextRoundTrips) {
    for (const char* t : {"hold op=read first=1", "reorder=2 every=2", "torn=8:ok", "corrupt=100:0x5a op=read", "lie op=write,flush", "crash nth=3",
                          "delay=10ms..80ms seed=4", "ioerr time=2s..5s depth=4", "ioerr time=1ms.."}) {
        const Rule a = parse_ok(t);
        EXPECT_EQ(to_text(a), to_text(parse_ok(to_text(a)))) << t << " -> " << to_text(a);
    }
    EXPECT_EQ(to_text(parse_ok("delay=10ms..80ms seed=4")), "delay=10ms..80ms seed=4");
}

TEST(FaultRuleActions, MistakesNameTheColumn) {
    struct Case {
        const char* text;
        size_t column;
        const char* says;
    } cases[] = {
        {"reorder=0", 9, "reorder=N"},
        {"torn", 5, "expected torn=SECTORS"},
        {"torn=8:maybe", 8, "expected ok or ioerr"},
        {"torn=8 op=read", 1, "torn applies to writes only"},
        {"corrupt=x", 9, "corrupt=OFFSET"},
        {"corrupt=1:0x100", 11, "XOR mask"},
        {"corrupt=1 op=flush", 1, "reads and writes only"},
        {"lie op=read", 1, "lie applies to requests that change the disk"},
        {"lie", 1, "lie applies"},
        {"delay=80ms..10ms", 7, "empty delay range"},
        {"delay=1ms..soon", 12, "longest delay"},
        {"ioerr time=5s", 12, "time window"},
        {"ioerr time=5s..2s", 12, "empty time window"},
        {"ioerr time=x..2s", 12, "expected a duration"},
        {"ioerr depth=0", 13, "queue depth"},
        {"hold=3", 1, "expected an action"},
    };
    for (const auto& c : cases) {
        const RuleError e = parse_bad(c.text);
        EXPECT_EQ(e.column, c.column) << c.text << ": " << e.message;
        EXPECT_NE(e.message.find(c.says), std::string::npos) << c.text << ": " << e.message;
    }
}

TEST(FaultEngineMatching, DepthAndTimeWindow) {
    Engine e;
    const uint32_t deep = e.add(parse_ok("ioerr op=read depth=4"));
    EXPECT_FALSE(e.decide(0, 0, 8, 0, 3).fire) << "depth 3 < 4";
    const auto d = e.decide(0, 0, 8, 0, 4);
    EXPECT_TRUE(d.fire);
    EXPECT_EQ(d.rule_id, deep);
    e.clear();
    e.add(parse_ok("ioerr op=write time=1s..2s"));
    EXPECT_FALSE(e.decide(1, 0, 8, 0, 1, 999'999'999).fire);
    EXPECT_TRUE(e.decide(1, 0, 8, 0, 1, 1'000'000'000).fire);
    EXPECT_TRUE(e.decide(1, 0, 8, 0, 1, 1'999'999'999).fire);
    EXPECT_FALSE(e.decide(1, 0, 8, 0, 1, 2'000'000'000).fire) << "the window's end is exclusive";
}

TEST(FaultEngineMatching, RandomDelayIsReproducibleAndInRange) {
    auto draws = [] {
        Engine e;
        e.add(parse_ok("delay=10ms..20ms seed=9"));
        std::vector<uint64_t> out;
        for (int i = 0; i < 50; ++i) out.push_back(e.decide(0, 0, 8, 0).action.delay_ns);
        return out;
    };
    const auto a = draws(), b = draws();
    EXPECT_EQ(a, b);
    EXPECT_GT(std::set<uint64_t>(a.begin(), a.end()).size(), 10u) << "not random";
    for (auto v : a) {
        EXPECT_GE(v, 10'000'000u);
        EXPECT_LE(v, 20'000'000u);
    }
}

}  // namespace
}  // namespace blkrig::faults

namespace blkrig::faults {
namespace {

// --faults FILE: plain rules with comments and blank lines, and the fault.add
// calls save_config writes, in one file; lines are counted as written.
TEST(FaultRuleFile, PlainRulesAndSavedCallsReadTheSame) {
    const std::string text =
        "# rules for a test\n"
        "\n"
        "ioerr op=read sector=264..271   # the bad page\r\n"
        R"({"jsonrpc":"2.0","method":"fault.add","params":{"rule":"delay=2ms op=write prob=0.25 seed=7"}})"
        "\n"
        "   \t\n"
        "unsupp op=flush";
    auto parsed = parse_rule_file(text);
    ASSERT_TRUE(std::holds_alternative<std::vector<FileRule>>(parsed)) << std::get<RuleFileError>(parsed).describe("f");
    const auto& rules = std::get<std::vector<FileRule>>(parsed);
    ASSERT_EQ(rules.size(), 3u);
    EXPECT_EQ(rules[0].line, 3u);
    EXPECT_EQ(to_text(rules[0].rule), "ioerr op=read sector=264..271");
    EXPECT_EQ(rules[1].line, 4u);
    EXPECT_EQ(to_text(rules[1].rule), "delay=2ms op=write prob=0.25 seed=7");
    EXPECT_EQ(rules[2].line, 6u);
    EXPECT_EQ(to_text(rules[2].rule), "unsupp op=flush");
}

TEST(FaultRuleFile, MistakesNameLineAndColumn) {
    auto bad = [](const std::string& text) {
        auto parsed = parse_rule_file(text);
        EXPECT_TRUE(std::holds_alternative<RuleFileError>(parsed)) << text << " parsed";
        return std::holds_alternative<RuleFileError>(parsed) ? std::get<RuleFileError>(parsed) : RuleFileError{};
    };
    auto e = bad("ioerr op=read\n# fine\nioerr op=reed\n");
    EXPECT_EQ(e.line, 3u);
    EXPECT_EQ(e.column, 10u);
    EXPECT_EQ(e.describe("rules.txt"), "rules.txt:3:10: expected an op (read, write, flush, discard, write_zeroes, any), got 'reed' (in 'ioerr op=reed')");
    // Inside a saved call the column points into the JSON string.
    const std::string call = R"({"jsonrpc":"2.0","method":"fault.add","params":{"rule":"ioerr op=reed"}})";
    e = bad(call + "\n");
    EXPECT_EQ(e.line, 1u);
    EXPECT_EQ(call.substr(e.column - 1, 4), "reed");
    e = bad("ioerr\n{\"method\":\"fault.remove\",\"params\":{\"id\":1}}\n");
    EXPECT_EQ(e.line, 2u);
    EXPECT_NE(e.message.find("expected a fault.add call"), std::string::npos) << e.message;
    e = bad("{not json\n");
    EXPECT_EQ(e.line, 1u);
    EXPECT_NE(e.message.find("not JSON"), std::string::npos) << e.message;
}

// A key given twice would keep only its last value: the second is an error
// at its own column, and op= points at its list form.
TEST(FaultRule, RepeatedKeysAreErrorsNamingTheKey) {
    const RuleError op = parse_bad("ioerr op=read op=write");
    EXPECT_EQ(op.column, 15u);
    EXPECT_NE(op.message.find("op= given twice (first at column 7)"), std::string::npos) << op.message;
    EXPECT_NE(op.message.find("op=read,write"), std::string::npos) << op.message;
    for (const char* t : {"ioerr queue=0 queue=1", "ioerr sector=1 sector=2", "delay=1ms seed=1 seed=2", "ioerr nth=1 nth=2",
                          "ioerr time=1s.. time=2s..", "ioerr depth=2 depth=3", "ioerr after_marker=1 after_marker=2"}) {
        const RuleError e = parse_bad(t);
        EXPECT_NE(e.message.find("given twice"), std::string::npos) << t << ": " << e.message;
        const std::string text(t);
        EXPECT_EQ(e.column, text.rfind(' ') + 2) << t;  // the second term
    }
    // The list form is one key.
    EXPECT_EQ(parse_ok("ioerr op=read,write").ops, kOpRead | kOpWrite);
}

TEST(FaultRule, RulesThatCouldNeverFireAreNamed) {
    // 100 sectors (the marker region included), 2 queues.
    EXPECT_FALSE(never_fires(parse_ok("ioerr sector=99"), 100, 2));
    EXPECT_FALSE(never_fires(parse_ok("ioerr sector=50..5000"), 100, 2));  // overlaps the end: fires on 50..99
    EXPECT_FALSE(never_fires(parse_ok("ioerr queue=1"), 100, 2));
    EXPECT_FALSE(never_fires(parse_ok("ioerr op=flush"), 100, 1));
    const auto past = never_fires(parse_ok("ioerr sector=100.."), 100, 2);
    ASSERT_TRUE(past);
    EXPECT_NE(past->find("sector=100 is past the device's last sector 99 (it has 100 sectors)"), std::string::npos) << *past;
    const auto queue = never_fires(parse_ok("ioerr op=read queue=9"), 100, 1);
    ASSERT_TRUE(queue);
    EXPECT_NE(queue->find("queue=9 but the device has 1 queue (0..0)"), std::string::npos) << *queue;
    EXPECT_TRUE(never_fires(parse_ok("ioerr queue=2"), 100, 2));
}

// Found by fuzz_fault_rule: both threw out of parse_rule_file (a JSON number
// beyond a double, a "method" that is not a string) and ended the device.
TEST(FaultRuleFile, CallsThatAreNotQuiteJsonOrNotQuiteCallsAreLineErrors) {
    for (const std::string text : {R"({"jsonrpc":88888888888e888})", R"({"jsonrpc":"2.0","method":1,"params":{"rule":"ioerr"}})"}) {
        const auto parsed = parse_rule_file("ioerr op=read\n" + text + "\n");
        ASSERT_TRUE(std::holds_alternative<RuleFileError>(parsed)) << text;
        const auto& e = std::get<RuleFileError>(parsed);
        EXPECT_EQ(e.line, 2u) << text;
        EXPECT_GE(e.column, 1u);
        EXPECT_EQ(e.text, text);
    }
}

}  // namespace
}  // namespace blkrig::faults

// What each action means for a request (faults/effect), without a device.
namespace {
blkrig::faults::Effect effect(const char* rule, uint32_t type, uint64_t bytes) {
    const auto r = blkrig::faults::parse_rule(rule);
    EXPECT_TRUE(std::holds_alternative<blkrig::faults::Rule>(r)) << rule;
    return blkrig::faults::effect_of(std::get<blkrig::faults::Rule>(r).action, type, bytes);
}
}  // namespace

TEST(FaultEffect, EachActionSaysWhatRunsWhatTheGuestHearsAndWhen) {
    using R = blkrig::faults::Effect::Run;
    using St = blkrig::faults::Effect::Status;
    using Df = blkrig::faults::Effect::Defer;
    auto e = effect("ioerr", VIRTIO_BLK_T_IN, 4096);
    EXPECT_EQ(e.run, R::none);
    EXPECT_EQ(e.status, St::ioerr);
    e = effect("unsupp", VIRTIO_BLK_T_OUT, 4096);
    EXPECT_EQ(e.run, R::none);
    EXPECT_EQ(e.status, St::unsupp);
    e = effect("delay=5ms", VIRTIO_BLK_T_IN, 4096);
    EXPECT_EQ(e.run, R::all);
    EXPECT_EQ(e.defer, Df::delay);
    EXPECT_EQ(e.delay_ns, 5'000'000u);
    EXPECT_EQ(effect("hold", VIRTIO_BLK_T_OUT, 4096).defer, Df::hold);
    e = effect("reorder=3", VIRTIO_BLK_T_OUT, 4096);
    EXPECT_EQ(e.defer, Df::reorder);
    EXPECT_EQ(e.reorder_after, 3u);
    // A tear keeps the first N sectors and reports IOERR, unless :ok or nothing was cut.
    e = effect("torn=2", VIRTIO_BLK_T_OUT, 4096);
    EXPECT_EQ(e.run, R::prefix);
    EXPECT_EQ(e.keep_bytes, 1024u);
    EXPECT_EQ(e.status, St::ioerr);
    EXPECT_EQ(effect("torn=2:ok", VIRTIO_BLK_T_OUT, 4096).status, St::as_run);
    e = effect("torn=16", VIRTIO_BLK_T_OUT, 4096);
    EXPECT_EQ(e.keep_bytes, 4096u);
    EXPECT_EQ(e.status, St::as_run);
    EXPECT_EQ(effect("torn=0", VIRTIO_BLK_T_OUT, 4096).keep_bytes, 0u);
    // Corruption: of what a read returns, of what a write stores; past the payload, nothing.
    e = effect("corrupt=10:0x01", VIRTIO_BLK_T_IN, 4096);
    EXPECT_EQ(e.run, R::corrupt_read);
    EXPECT_EQ(e.offset, 10u);
    EXPECT_EQ(e.mask, 0x01);
    EXPECT_EQ(effect("corrupt=10", VIRTIO_BLK_T_OUT, 4096).run, R::corrupt_write);
    EXPECT_EQ(effect("corrupt=4096", VIRTIO_BLK_T_OUT, 4096).run, R::all);
    e = effect("lie op=flush", VIRTIO_BLK_T_FLUSH, 0);
    EXPECT_EQ(e.run, R::none);
    EXPECT_EQ(e.status, St::as_run);
    EXPECT_EQ(effect("crash", VIRTIO_BLK_T_OUT, 4096).run, R::crash);
}
