// Scenario parsing: a good scenario becomes the right structures; each kind
// of mistake is an error naming the line and what to change.
#include "checks/steps.hpp"
#include "scenario/scenario.hpp"

#include <gtest/gtest.h>

namespace blkrig::scenario {
namespace {

const char* kGood = R"(
[scenario]
name = "read"
kernel = "debian-bookworm-cloud"

[disk]
fs = "vfat"
size = "64M"
cluster = 4096

[[disk.files]]
path = "/f1.bin"
size = "4M"
seed = 7

[[disk.files]]
path = "/frag.bin"
size = 1048576
layout = "fragmented"
extents = 4

[device]
seg_max = 8
queue_size = 256

[guest]
scheduler = "none"
nomerges = 2

[[steps]]
op = "mount"

[[steps]]
op = "read"
path = "/mnt/f1.bin"
bs = "64K"
expect = { ret = 0, bytes = "4M", sha256 = "file" }
)";

TEST(Scenario, GoodScenarioParses) {
    const auto s = parse_scenario(kGood, "good.toml");
    EXPECT_EQ(s.name, "read");
    EXPECT_EQ(s.kernel, "debian-bookworm-cloud");
    EXPECT_EQ(s.disk.size_bytes, 64u << 20);
    EXPECT_EQ(s.disk.cluster_bytes, 4096u);
    ASSERT_EQ(s.disk.files.size(), 2u);
    EXPECT_EQ(s.disk.files[0].seed, 7u);
    EXPECT_EQ(s.disk.files[1].layout, "fragmented");
    EXPECT_EQ(s.disk.files[1].extents, 4u);
    EXPECT_EQ(s.device.seg_max, 8u);
    EXPECT_EQ(s.guest.queue.at("nomerges"), "2");
    ASSERT_EQ(s.steps.size(), 2u);
    EXPECT_EQ(s.steps[1].args["bs"], 65536);
    EXPECT_EQ(s.steps[1].args["path"], "/mnt/f1.bin");
    EXPECT_EQ(*s.steps[1].expect.bytes, 4u << 20);
    EXPECT_EQ(*s.steps[1].expect.sha256, "file");
    EXPECT_EQ(s.steps[1].line, 33);  // the [[steps]] header of the read
    const auto dj = disk_json(s.disk);
    EXPECT_EQ(dj["files"][1]["extents"], 4);
    EXPECT_TRUE(s.extent_check);
    EXPECT_FALSE(parse_scenario("[scenario]\nextent_check = false\n[[steps]]\nop = \"sync\"\n", "x.toml").extent_check);
}

// Each case breaks one thing; the error must carry the line and the hint.
struct Bad {
    const char* name;
    const char* text;
    int line;
    const char* says;
};

class BadScenario : public ::testing::TestWithParam<Bad> {};

TEST_P(BadScenario, IsAnErrorNamingLineAndFix) {
    const Bad& b = GetParam();
    try {
        parse_scenario(b.text, "bad.toml");
        FAIL() << b.name << ": parsed";
    } catch (const ScenarioError& e) {
        EXPECT_EQ(e.line, b.line) << e.what();
        EXPECT_NE(std::string(e.what()).find(b.says), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).rfind("bad.toml:", 0), 0u) << e.what();
    }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadScenario,
    ::testing::Values(
        Bad{"unknown key", "[disk]\nfs = \"vfat\"\nsizee = \"4M\"\n[[steps]]\nop = \"sync\"\n", 3, "unknown key 'sizee'"},
        Bad{"unknown top-level", "[disks]\n[[steps]]\nop = \"sync\"\n", 1, "unknown key 'disks'"},
        Bad{"path outside mount", "[[steps]]\nop = \"read\"\npath = \"/etc/passwd\"\n", 3, "outside the mount"},
        Bad{"file bigger than disk", "[disk]\nsize = \"4M\"\n[[disk.files]]\npath = \"/a\"\nsize = \"8M\"\n[[steps]]\nop = \"sync\"\n", 5,
            "does not fit"},
        Bad{"unknown op", "[[steps]]\nop = \"reed\"\n", 2, "unknown step op 'reed'"},
        Bad{"field of another op", "[[steps]]\nop = \"sync\"\npath = \"/mnt/a\"\n", 3, "has no field 'path'"},
        Bad{"cpu the guest lacks", "[device]\nnum_queues = 2\n[[steps]]\nop = \"sync\"\ncpu = 2\n", 5,
            "steps.cpu = 2 needs a guest with 3 CPUs: the guest gets one per queue, set device.num_queues = 3"},
        Bad{"cpu negative", "[[steps]]\nop = \"sync\"\ncpu = -1\n", 3, "steps.cpu"},
        Bad{"bad size", "[disk]\nsize = \"4Q\"\n[[steps]]\nop = \"sync\"\n", 2, "must be a size"},
        Bad{"bad fs", "[disk]\nfs = \"ntfs\"\n[[steps]]\nop = \"sync\"\n", 2, "not one of"},
        Bad{"no steps", "[disk]\nfs = \"vfat\"\n", 1, "no steps"},
        Bad{"not toml", "[disk\n", 1, "not valid TOML"},
        Bad{"fragmented without extents", "[[disk.files]]\npath = \"/a\"\nsize = 4096\nlayout = \"fragmented\"\n[[steps]]\nop = \"sync\"\n", 1,
            "needs extents"},
        Bad{"sparse on vfat", "[[disk.files]]\npath = \"/a\"\nsize = 4096\nlayout = \"sparse\"\n[[steps]]\nop = \"sync\"\n", 1, "sparse files need"},
        Bad{"sha256 file of unknown file", "[[steps]]\nop = \"read\"\npath = \"/mnt/x\"\nexpect = { sha256 = \"file\" }\n", 1, "needs a read step"},
        // A step with no path threw out of the reader (fuzz_scenario/crash-sha256-file-path-outside-mnt).
        Bad{"sha256 file on a step without a path", "[[steps]]\nop = \"sync\"\nexpect = { sha256 = \"file\" }\n", 1, "('' is not one)"},
        Bad{"fault after a step that does not exist", "[[faults]]\nrule = \"ioerr\"\nafter_step = 3\n[[steps]]\nop = \"sync\"\n", 1,
            "after_step/until_step 3 but the scenario has 1 steps"},
        Bad{"bad fault rule", "[[faults]]\nrule = \"ioerr op=reed\"\n[[steps]]\nop = \"sync\"\n", 2, "expected an op"},
        Bad{"extent_check not a boolean", "[scenario]\nextent_check = \"no\"\n[[steps]]\nop = \"sync\"\n", 2, "must be true or false"},
        Bad{"queue size not power of two", "[device]\nqueue_size = 100\n[[steps]]\nop = \"sync\"\n", 2, "power of two"},
        Bad{"unknown ext2 driver", "[disk]\nfs = \"ext2\"\n[guest]\next2_driver = \"ext3\"\n[[steps]]\nop = \"sync\"\n", 4,
            "guest.ext2_driver 'ext3' is not one of: auto, ext2, ext4"},
        Bad{"ext2 driver on vfat", "[disk]\nfs = \"vfat\"\n[guest]\next2_driver = \"ext2\"\n[[steps]]\nop = \"sync\"\n", 4,
            "applies to ext2 disks only"},
        // Rules that could never fire: 64 MiB are sectors 0..131071, the marker region 131072..133119.
        Bad{"fault past the disk and markers", "[disk]\nsize = \"64M\"\n[[faults]]\nrule = \"ioerr sector=133120..\"\n[[steps]]\nop = \"sync\"\n", 4,
            "sector=133120 is past the device's last sector 133119 (it has 133120 sectors): the rule could never fire (the device has disk.size = 67108864 bytes and 2048 "
            "marker sectors, device.num_queues = 1)"},
        Bad{"fault on a queue the device lacks", "[device]\nnum_queues = 2\n[[faults]]\nrule = \"ioerr queue=2\"\n[[steps]]\nop = \"sync\"\n", 4,
            "queue=2 but the device has 2 queues (0..1)"},
        Bad{"fault rule with a key twice", "[[faults]]\nrule = \"ioerr op=read op=write\"\n[[steps]]\nop = \"sync\"\n", 2,
            "op= given twice"},
        Bad{"size that wraps", "[disk]\nsize = \"999999999999999G\"\n[[steps]]\nop = \"sync\"\n", 2, "must be a size"},
        Bad{"memory past any host", "[guest]\nmemory = \"16000000G\"\n[[steps]]\nop = \"sync\"\n", 2, "more than any host has"}),
    [](const auto& info) {
        std::string n = info.param.name;
        for (auto& c : n)
            if (!isalnum(static_cast<unsigned char>(c))) c = '_';
        return n;
    });

TEST(Scenario, Ext2DriverDefaultsToAutoAndKeepsItsLine) {
    EXPECT_EQ(parse_scenario(kGood, "good.toml").guest.ext2_driver, "auto");
    const auto s = parse_scenario("[disk]\nfs = \"ext2\"\n[guest]\next2_driver = \"ext4\"\n[[steps]]\nop = \"sync\"\n", "e.toml");
    EXPECT_EQ(s.guest.ext2_driver, "ext4");
    EXPECT_EQ(s.guest.ext2_driver_line, 4);
}

TEST(Scenario, AStepPinnedToACpuOfItsQueues) {
    const auto sc = parse_scenario("[device]\nnum_queues = 2\n[[steps]]\nop = \"sync\"\ncpu = 1\n[[steps]]\nop = \"sync\"\n", "s.toml");
    EXPECT_EQ(sc.steps[0].args.value("cpu", -1), 1);
    EXPECT_FALSE(sc.steps[1].args.contains("cpu"));
}

TEST(Scenario, ParseSize) {
    EXPECT_EQ(parse_size("512"), 512u);
    EXPECT_EQ(parse_size("4K"), 4096u);
    EXPECT_EQ(parse_size("64M"), 64u << 20);
    EXPECT_EQ(parse_size("1G"), 1u << 30);
    EXPECT_FALSE(parse_size(""));
    EXPECT_FALSE(parse_size("M"));
    EXPECT_FALSE(parse_size("-1"));
    EXPECT_FALSE(parse_size("1.5M"));
    // Past 2^64 bytes: refused, not wrapped to a small size.
    EXPECT_EQ(parse_size("16777215G"), 16777215ull << 30);
    EXPECT_FALSE(parse_size("17179869184G"));
    EXPECT_FALSE(parse_size("999999999999999G"));
}

TEST(Scenario, FaultRulesInsideTheDeviceParse) {
    const auto s = parse_scenario(
        "[disk]\nsize = \"64M\"\n[device]\nnum_queues = 2\n[[faults]]\nrule = \"ioerr sector=133119 queue=1\"\n[[steps]]\nop = \"sync\"\n", "x.toml");
    ASSERT_EQ(s.faults.size(), 1u);
    EXPECT_EQ(s.disk.size_line, 2);
}

// expect.sha256 = "file" compares the read's XXH3-128 with the file's (a
// "content" check); a literal digest compares the SHA-256 the agent reports
// for that step only.
TEST(StepChecks, FileContentByXxh128AndLiteralBySha256) {
    const auto sc = parse_scenario(R"(
[disk]
fs = "vfat"
size = "64M"
[[disk.files]]
path = "/f.bin"
size = "4K"
[[steps]]
op = "mount"
[[steps]]
op = "read"
path = "/mnt/f.bin"
expect = { sha256 = "file" }
[[steps]]
op = "read"
path = "/mnt/f.bin"
expect = { sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" }
)",
                                   "t.toml");
    const std::map<std::string, std::string> files = {{"/mnt/f.bin", "06b05ab6733a618578af5f94892f3950"}};
    auto run = [&](const std::string& xxh, const std::string& sha) {
        std::map<size_t, nlohmann::json> res;
        res[0] = {{"ret", 0}};
        res[1] = {{"ret", 0}, {"xxh128", xxh}, {"sha256", "not this"}};
        res[2] = {{"ret", 0}, {"xxh128", "not this"}, {"sha256", sha}};
        return checks::check_steps(sc, res, files);
    };
    auto good = run("06b05ab6733a618578af5f94892f3950", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ASSERT_EQ(good.size(), 3u);
    EXPECT_TRUE(good[1].ok && good[2].ok);
    EXPECT_EQ(good[1].checks.back().what, "content");
    EXPECT_EQ(good[2].checks.back().what, "sha256");
    auto bad = run("99aa06d3014798d86001c324468d497f", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_FALSE(bad[1].ok);
    EXPECT_FALSE(bad[2].ok);
    EXPECT_NE(checks::describe_failure(bad[1]).find("content expected 06b05ab6733a618578af5f94892f3950, got 99aa06d3"),
              std::string::npos)
        << checks::describe_failure(bad[1]);
}

}  // namespace
}  // namespace blkrig::scenario
