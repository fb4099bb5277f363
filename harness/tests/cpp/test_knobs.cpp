// The knob comparison: each [device] and [guest] knob against what the
// guest read back, and the sentence a knob that was not applied gets.
#include "run/knobs.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace blkrig::run {
namespace {

using nlohmann::json;

// What the guest reports for the default [device] (two queues here) and
// the [guest] knobs of the scenario below, all applied.
json good_hello() {
    return {{"type", "hello"},
            {"cpus_online", "0-1"},
            {"sysfs",
             {{"queue/scheduler", "[mq-deadline] none"},
              {"queue/nomerges", "2"},
              {"queue/read_ahead_kb", "32"},
              {"queue/max_sectors_kb", "16"},
              {"queue/max_hw_sectors_kb", "2147483647"},
              {"queue/rq_affinity", "2"},
              {"queue/logical_block_size", "4096"},
              {"queue/max_segments", "8"},
              {"queue/max_segment_size", "65536"},
              {"queue/write_cache", "write through"},
              {"ro", "1"},
              {"mq/0/cpu_list", "0"},
              {"mq/0/nr_tags", "64"},
              {"mq/1/cpu_list", "1"},
              {"mq/1/nr_tags", "64"}}}};
}

scenario::Scenario knobs_scenario() {
    scenario::Scenario sc;
    sc.file = "k.toml";
    sc.device.logical_block_size = 4096;
    sc.device.seg_max = 8;
    sc.device.size_max = 65536;
    sc.device.num_queues = 2;
    sc.device.queue_size = 64;
    sc.device.write_cache = false;
    sc.device.read_only = true;
    sc.guest.queue = {{"scheduler", "mq-deadline"}, {"nomerges", "2"}, {"read_ahead_kb", "32"}, {"max_sectors_kb", "16"}, {"rq_affinity", "2"}};
    sc.guest.mount_options = "ro,noatime,fmask=022";
    return sc;
}

json mounted(const std::string& options) { return {{"type", "step"}, {"op", "mount"}, {"ret", 0}, {"mount_options", options}}; }

const KnobReading* knob(const KnobReport& r, const std::string& name) {
    for (const auto& k : r.knobs)
        if (k.knob == name) return &k;
    return nullptr;
}

std::string all(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += s + "\n";
    return out;
}

TEST(Knobs, EveryKnobAppliedIsNoProblem) {
    const auto r = check_knobs(knobs_scenario(), good_hello(), mounted("ro,noatime,fmask=0022,dmask=0022,codepage=437"));
    EXPECT_TRUE(r.problems.empty()) << all(r.problems);
    for (const char* k : {"device.logical_block_size", "device.seg_max", "device.size_max", "device.write_cache", "device.read_only",
                          "device.num_queues", "device.queue_size", "guest.scheduler", "guest.nomerges", "guest.read_ahead_kb",
                          "guest.max_sectors_kb", "guest.rq_affinity", "guest.mount_options"}) {
        const auto* reading = knob(r, k);
        ASSERT_NE(reading, nullptr) << k;
        EXPECT_TRUE(reading->applied) << k << ": " << reading->problem;
    }
    EXPECT_EQ(knob(r, "guest.scheduler")->found, "[mq-deadline] none");
    EXPECT_EQ(knob(r, "guest.scheduler")->read_from, "/sys/block/vda/queue/scheduler");
    EXPECT_EQ(knob(r, "device.queue_size")->found, "64 64");
}

TEST(Knobs, NoHelloChecksNothing) {
    const auto r = check_knobs(knobs_scenario(), json(), json());
    EXPECT_TRUE(r.knobs.empty());
    EXPECT_TRUE(r.problems.empty());
}

TEST(Knobs, SizeMaxZeroIsNotChecked) {
    auto sc = knobs_scenario();
    sc.device.size_max = 0;
    auto h = good_hello();
    h["sysfs"]["queue/max_segment_size"] = "4294967295";
    const auto r = check_knobs(sc, h, mounted("ro,noatime,fmask=0022"));
    EXPECT_EQ(knob(r, "device.size_max"), nullptr);
    EXPECT_TRUE(r.problems.empty()) << all(r.problems);
}

TEST(Knobs, MountOptionsUncheckedWithoutAMount) {
    const auto r = check_knobs(knobs_scenario(), good_hello(), json());
    EXPECT_EQ(knob(r, "guest.mount_options"), nullptr);
    const auto failed = check_knobs(knobs_scenario(), good_hello(), json{{"op", "mount"}, {"ret", -1}});
    EXPECT_EQ(knob(failed, "guest.mount_options"), nullptr);
}

// One attribute changed from good_hello: the knob it belongs to, and the
// words its sentence must have.
struct Mismatch {
    const char* key;
    const char* value;  // nullptr: the attribute is missing
    const char* knob;
    std::vector<std::string> words;
};

class KnobMismatch : public ::testing::TestWithParam<Mismatch> {};

TEST_P(KnobMismatch, NamesTheKnobWhatWasAskedAndWhatWasFound) {
    const Mismatch& m = GetParam();
    auto h = good_hello();
    if (m.value) h["sysfs"][m.key] = m.value;
    else h["sysfs"].erase(m.key);
    const auto r = check_knobs(knobs_scenario(), h, mounted("ro,noatime,fmask=0022"));
    ASSERT_EQ(r.problems.size(), 1u) << all(r.problems);
    const auto* k = knob(r, m.knob);
    ASSERT_NE(k, nullptr);
    EXPECT_FALSE(k->applied);
    EXPECT_EQ(k->problem, r.problems[0]);
    EXPECT_EQ(r.problems[0].rfind("k.toml: " + std::string(m.knob) + " = ", 0), 0u) << r.problems[0];
    for (const auto& w : m.words) EXPECT_NE(r.problems[0].find(w), std::string::npos) << "'" << w << "' not in: " << r.problems[0];
}

INSTANTIATE_TEST_SUITE_P(
    EachKnob, KnobMismatch,
    ::testing::Values(
        Mismatch{"queue/scheduler", "[none] mq-deadline", "guest.scheduler",
                 {"guest.scheduler = mq-deadline was not applied", "\"[none] mq-deadline\"", "/sys/block/vda/queue/scheduler", "bracketed"}},
        Mismatch{"queue/nomerges", "0", "guest.nomerges", {"guest.nomerges = 2 was not applied", "\"0\"", "/sys/block/vda/queue/nomerges"}},
        Mismatch{"queue/read_ahead_kb", "128", "guest.read_ahead_kb", {"guest.read_ahead_kb = 32 was not applied", "\"128\"", "whole pages"}},
        Mismatch{"queue/max_sectors_kb", "1280", "guest.max_sectors_kb",
                 {"guest.max_sectors_kb = 16 was not applied", "\"1280\"", "max_hw_sectors_kb is 2147483647"}},
        Mismatch{"queue/rq_affinity", "1", "guest.rq_affinity", {"guest.rq_affinity = 2 was not applied", "\"1\""}},
        Mismatch{"queue/rq_affinity", nullptr, "guest.rq_affinity",
                 {"guest.rq_affinity = 2 cannot be confirmed", "has no /sys/block/vda/queue/rq_affinity"}},
        Mismatch{"queue/logical_block_size", "512", "device.logical_block_size",
                 {"device.logical_block_size = 4096 was not applied", "\"512\"", "/sys/block/vda/queue/logical_block_size"}},
        Mismatch{"queue/max_segments", "126", "device.seg_max", {"device.seg_max = 8 was not applied", "\"126\"", "queue/max_segments"}},
        Mismatch{"queue/max_segment_size", "4096", "device.size_max",
                 {"device.size_max = 65536 was not applied", "\"4096\"", "queue/max_segment_size"}},
        Mismatch{"queue/write_cache", "write back", "device.write_cache",
                 {"device.write_cache = false was not applied", "\"write back\"", "queue/write_cache"}},
        Mismatch{"ro", "0", "device.read_only", {"device.read_only = true was not applied", "\"0\"", "/sys/block/vda/ro"}},
        Mismatch{"mq/1/nr_tags", "32", "device.queue_size",
                 {"device.queue_size = 64 was not applied", "queue 1 has 32 tags", "mq/1/nr_tags"}},
        Mismatch{"mq/1/cpu_list", "", "device.num_queues",
                 {"device.num_queues = 2 was not applied", "no guest CPU maps to queue 1", "CPUs online: 0-1"}}));

TEST(Knobs, FewerQueuesThanAskedNamesTheCount) {
    auto h = good_hello();
    h["sysfs"].erase("mq/1/cpu_list");
    h["sysfs"].erase("mq/1/nr_tags");
    const auto r = check_knobs(knobs_scenario(), h, mounted("ro,noatime,fmask=0022"));
    ASSERT_EQ(r.problems.size(), 1u) << all(r.problems);
    EXPECT_NE(r.problems[0].find("device.num_queues = 2 was not applied: the guest has 1 hardware queues"), std::string::npos) << r.problems[0];
}

TEST(Knobs, MountOptionsNameWhatIsMissing) {
    const auto sc = knobs_scenario();
    // rw instead of ro, relatime instead of noatime, another fmask.
    const auto r = check_knobs(sc, good_hello(), mounted("rw,relatime,fmask=0077"));
    ASSERT_EQ(r.problems.size(), 1u) << all(r.problems);
    EXPECT_EQ(r.problems[0],
              "k.toml: guest.mount_options = \"ro,noatime,fmask=022\" was not applied: /mnt is mounted with \"rw,relatime,fmask=0077\" "
              "(ro, noatime, fmask=022 missing)");
    auto neg = sc;
    neg.guest.mount_options = "exec,strictatime,async";
    EXPECT_TRUE(check_knobs(neg, good_hello(), mounted("rw")).problems.empty());
    const auto bad = check_knobs(neg, good_hello(), mounted("rw,noexec,relatime,sync"));
    ASSERT_EQ(bad.problems.size(), 1u);
    EXPECT_NE(bad.problems[0].find("(exec, strictatime, async missing)"), std::string::npos) << bad.problems[0];
    const auto gone = check_knobs(sc, good_hello(), json{{"op", "mount"}, {"ret", 0}});
    ASSERT_EQ(gone.problems.size(), 1u);
    EXPECT_NE(gone.problems[0].find("cannot be confirmed: /mnt was not in the guest's /proc/self/mounts"), std::string::npos);
}

TEST(Knobs, TheReportKeepsTheRawReadings) {
    const auto r = check_knobs(knobs_scenario(), good_hello(), mounted("ro,noatime,fmask=0022"));
    const json j = to_json(r, good_hello());
    EXPECT_EQ(j["cpus_online"], "0-1");
    EXPECT_EQ(j["sysfs"]["queue/max_segments"], "8");
    ASSERT_TRUE(j["knobs"].is_array());
    EXPECT_EQ(j["knobs"].size(), r.knobs.size());
    EXPECT_TRUE(std::all_of(j["knobs"].begin(), j["knobs"].end(), [](const json& k) { return k["applied"] == true && !k.contains("problem"); }));
}

// The trace buffer follows what the steps can move: a 4 MiB file read to
// EOF asks for far less than the 16 MiB a guest CPU could have, a step that
// may grow the file counts the whole disk, and [guest] trace_buffer wins.
TEST(TraceBufferTest, FollowsWhatTheStepsCanMove) {
    auto sc = scenario::parse_scenario(R"(
[disk]
fs = "vfat"
size = "64M"
[[disk.files]]
path = "/f1.bin"
size = "4M"
[[steps]]
op = "mount"
[[steps]]
op = "read"
path = "/mnt/f1.bin"
)", "t.toml");
    EXPECT_EQ(trace_buffer_kb(sc), 1024 + 4096 / 4 * 512 / 1024);

    auto small_bs = sc;
    small_bs.steps[1].args["bs"] = 512;
    EXPECT_EQ(trace_buffer_kb(small_bs), 1024 + 4096 * 2 * 512 / 1024);

    auto grown = sc;
    scenario::Step w;
    w.op = "write";
    w.args = {{"op", "write"}, {"path", "/mnt/f1.bin"}, {"length", 4096}};
    grown.steps.push_back(w);
    EXPECT_EQ(trace_buffer_kb(grown), 1024 + 16384 * 512 / 1024) << "to EOF of a file a step may grow: the whole 64 MiB disk";

    auto eight_cpus = grown;
    eight_cpus.device.num_queues = 8;
    EXPECT_EQ(trace_buffer_kb(eight_cpus), 8192) << "within 64 MiB shared by 8 CPUs";

    auto given = sc;
    given.guest.trace_buffer_kb = 3072;
    EXPECT_EQ(trace_buffer_kb(given), 3072);
}

TEST(TraceBufferTest, TheKnobIsASizeWithinBounds) {
    auto sc = scenario::parse_scenario("[guest]\ntrace_buffer = \"2M\"\n[[steps]]\nop = \"sync\"\n", "t.toml");
    EXPECT_EQ(sc.guest.trace_buffer_kb, 2048u);
    EXPECT_THROW(scenario::parse_scenario("[guest]\ntrace_buffer = \"4K\"\n[[steps]]\nop = \"sync\"\n", "t.toml"), scenario::ScenarioError);
}

}  // namespace
}  // namespace blkrig::run
