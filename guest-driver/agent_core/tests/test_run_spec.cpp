// parse_run_spec: a complete description becomes the right types, defaults
// fill what is left out, and each kind of mistake is refused with the field
// that holds it.
#include "agent_core/run_spec.hpp"

#include <sys/mount.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace blkrig::agent {
namespace {

using Json = nlohmann::ordered_json;

Json good() {
    return Json::parse(R"({
      "version": 1,
      "modules": ["virtio_blk", "vfat"],
      "disk": "/dev/vda",
      "mountpoint": "/mnt",
      "fstype": "vfat",
      "mount_options": "ro,noatime,iocharset=ascii",
      "queue": {"scheduler": "none", "nomerges": 2, "read_ahead_kb": "128"},
      "marker": {"first_sector": 131072, "count": 1024, "block_size": 512},
      "trace": {"events": ["block/block_bio_queue", "block"], "functions": ["mpage_*", "do_mpage_readpage"], "buffer_kb": 16384},
      "step_timeout_s": 30,
      "steps": [
        {"op": "mount"},
        {"op": "drop_caches"},
        {"op": "read", "path": "/mnt/big.bin", "offset": 4096, "length": 8192, "bs": 512, "direct": true, "sha256": true},
        {"op": "write", "path": "/mnt/new.bin", "length": 1048576, "pattern": "random", "seed": 7, "append": true, "create": false},
        {"op": "open", "path": "/mnt/new.bin", "fd": "a", "access": "rw", "create": true},
        {"op": "write", "fd": "a", "length": 10, "pattern": "zero"},
        {"op": "fsync", "fd": "a"},
        {"op": "fdatasync", "path": "/mnt/new.bin"},
        {"op": "close", "fd": "a"},
        {"op": "truncate", "path": "/mnt/new.bin", "size": 100},
        {"op": "mmap_write", "path": "/mnt/new.bin", "offset": 10, "length": 20, "seed": 18446744073709551615},
        {"op": "fiemap", "path": "/mnt/big.bin"},
        {"op": "sleep", "ms": 5},
        {"op": "rename", "path": "/mnt/new.bin", "to": "/mnt/big.bin"},
        {"op": "sync"},
        {"op": "umount"}
      ]
    })");
}

RunSpec parse(const Json& j) { return parse_run_spec(j.dump()); }

TEST(RunSpec, ParsesEveryField) {
    const RunSpec r = parse(good());
    EXPECT_EQ(r.version, 1);
    EXPECT_EQ(r.modules, (std::vector<std::string>{"virtio_blk", "vfat"}));
    EXPECT_EQ(r.disk, "/dev/vda");
    EXPECT_EQ(r.mountpoint, "/mnt");
    EXPECT_EQ(r.fstype, "vfat");
    EXPECT_EQ(r.mount.flags, static_cast<unsigned long>(MS_RDONLY | MS_NOATIME));
    EXPECT_EQ(r.mount.data, "iocharset=ascii");
    using Knob = std::pair<std::string, std::string>;
    // In the order written, integers as their text.
    EXPECT_EQ(r.queue, (std::vector<Knob>{{"scheduler", "none"}, {"nomerges", "2"}, {"read_ahead_kb", "128"}}));
    ASSERT_TRUE(r.marker);
    EXPECT_EQ(r.marker->first_sector, 131072u);
    EXPECT_EQ(r.marker->count, 1024u);
    EXPECT_EQ(r.marker->block_size, 512u);
    EXPECT_EQ(r.trace.events, (std::vector<std::string>{"block/block_bio_queue", "block"}));
    EXPECT_EQ(r.trace.functions, (std::vector<std::string>{"mpage_*", "do_mpage_readpage"}));
    EXPECT_EQ(r.trace.buffer_kb, 16384);
    EXPECT_EQ(r.step_timeout_s, 30);
    ASSERT_EQ(r.steps.size(), 16u);

    const Step& read = r.steps[2];
    EXPECT_EQ(read.op, Op::read);
    EXPECT_EQ(read.path, "/mnt/big.bin");
    EXPECT_EQ(read.offset, 4096);
    EXPECT_EQ(read.length, 8192);
    EXPECT_EQ(read.bs, 512);
    EXPECT_TRUE(read.direct);
    EXPECT_TRUE(read.sha256);

    const Step& write = r.steps[3];
    EXPECT_FALSE(write.sha256);
    EXPECT_EQ(write.op, Op::write);
    EXPECT_EQ(write.length, 1048576);
    EXPECT_EQ(write.pattern, pattern::Kind::random);
    EXPECT_EQ(write.seed, 7u);
    EXPECT_TRUE(write.append);
    EXPECT_FALSE(write.create);

    const Step& open = r.steps[4];
    EXPECT_EQ(open.op, Op::open);
    EXPECT_EQ(open.fd, "a");
    EXPECT_EQ(open.access, Access::read_write);
    EXPECT_TRUE(open.create);

    EXPECT_EQ(r.steps[5].fd, "a");
    EXPECT_TRUE(r.steps[5].path.empty());
    EXPECT_EQ(r.steps[5].pattern, pattern::Kind::zero);
    EXPECT_EQ(r.steps[7].op, Op::fdatasync);
    EXPECT_EQ(r.steps[8].op, Op::close);
    EXPECT_EQ(r.steps[9].size, 100);
    EXPECT_EQ(r.steps[10].op, Op::mmap_write);
    EXPECT_EQ(r.steps[10].seed, 18446744073709551615u);
    EXPECT_EQ(r.steps[11].op, Op::fiemap);
    EXPECT_EQ(r.steps[12].ms, 5);
    EXPECT_EQ(r.steps[13].op, Op::rename);
    EXPECT_EQ(r.steps[13].path, "/mnt/new.bin");
    EXPECT_EQ(r.steps[13].to, "/mnt/big.bin");
    EXPECT_EQ(r.steps[15].op, Op::umount);
}

TEST(RunSpec, AnyStepMayBePinnedToACpu) {
    Json j = good();
    j["steps"][1]["cpu"] = 1;   // drop_caches
    j["steps"][2]["cpu"] = 0;   // read
    const RunSpec r = parse(j);
    EXPECT_EQ(r.steps[0].cpu, -1);
    EXPECT_EQ(r.steps[1].cpu, 1);
    EXPECT_EQ(r.steps[2].cpu, 0);
}

TEST(RunSpec, DefaultsFillWhatIsLeftOut) {
    const RunSpec r = parse_run_spec(R"({"version":1,"disk":"/dev/vda","steps":[
        {"op":"read","path":"/dev/vda"},{"op":"write","path":"/x","length":1},{"op":"drop_caches"},
        {"op":"open","path":"/x","fd":"f"}]})");
    EXPECT_EQ(r.mountpoint, "/mnt");
    EXPECT_EQ(r.fstype, "");
    EXPECT_EQ(r.mount.flags, 0u);
    EXPECT_TRUE(r.queue.empty());
    EXPECT_FALSE(r.marker);
    EXPECT_TRUE(r.trace.events.empty());
    EXPECT_EQ(r.trace.buffer_kb, 0);
    EXPECT_EQ(r.step_timeout_s, 60);
    EXPECT_EQ(r.steps[0].offset, 0);
    EXPECT_EQ(r.steps[0].length, -1);
    EXPECT_EQ(r.steps[0].bs, 4096);
    EXPECT_FALSE(r.steps[0].direct);
    EXPECT_EQ(r.steps[1].pattern, pattern::Kind::random);
    EXPECT_EQ(r.steps[1].seed, 0u);
    EXPECT_TRUE(r.steps[1].create);
    EXPECT_FALSE(r.steps[1].append);
    EXPECT_EQ(r.steps[2].value, 3);
    EXPECT_EQ(r.steps[3].access, Access::read);
    EXPECT_FALSE(r.steps[3].create);
}

TEST(RunSpec, MarkerOffsetsAndText) {
    const Marker m{131072, 16, 4096};
    EXPECT_EQ(m.byte_offset(0), 131072u * 512);
    EXPECT_EQ(m.byte_offset(3), 131072u * 512 + 3 * 4096);
    EXPECT_EQ(m.expected_text(3), "BLKRIG-MARKER 24\n");
}

TEST(RunSpec, SplitsMountOptions) {
    const MountOptions o = split_mount_options("rw,,nodev,uid=0,sync,shortname=mixed,");
    EXPECT_EQ(o.flags, static_cast<unsigned long>(MS_NODEV | MS_SYNCHRONOUS));
    EXPECT_EQ(o.data, "uid=0,shortname=mixed");
    EXPECT_EQ(split_mount_options("").data, "");
}

// One mistake each: the JSON change and the field the error must name.
struct Bad {
    const char* name;
    void (*edit)(Json&);
    const char* field;
    const char* says;
};

const Bad kBad[] = {
    {"version_missing", [](Json& j) { j.erase("version"); }, "version", "missing"},
    {"version_2", [](Json& j) { j["version"] = 2; }, "version", "speaks version 1, not 2"},
    {"unknown_top_field", [](Json& j) { j["disks"] = "/dev/vda"; }, "disks", "unknown field"},
    {"disk_missing", [](Json& j) { j.erase("disk"); }, "disk", "missing"},
    {"disk_relative", [](Json& j) { j["disk"] = "vda"; }, "disk", "absolute path"},
    {"disk_number", [](Json& j) { j["disk"] = 3; }, "disk", "expected a string, got an integer"},
    {"mountpoint_relative", [](Json& j) { j["mountpoint"] = "mnt"; }, "mountpoint", "absolute path"},
    {"modules_not_list", [](Json& j) { j["modules"] = "vfat"; }, "modules", "list of strings"},
    {"modules_entry", [](Json& j) { j["modules"][1] = 5; }, "modules[1]", "expected a string"},
    {"queue_not_object", [](Json& j) { j["queue"] = Json::array(); }, "queue", "expected an object"},
    {"queue_bad_value", [](Json& j) { j["queue"]["nomerges"] = true; }, "queue.nomerges", "string or an integer"},
    {"queue_bad_key", [](Json& j) { j["queue"]["../x"] = "1"; }, "queue.../x", "attribute name"},
    {"marker_no_first", [](Json& j) { j["marker"].erase("first_sector"); }, "marker.first_sector", "missing"},
    {"marker_block_size", [](Json& j) { j["marker"]["block_size"] = 1536; }, "marker.block_size", "512, 1024"},
    {"marker_unknown", [](Json& j) { j["marker"]["first"] = 1; }, "marker.first", "unknown field"},
    {"marker_too_few", [](Json& j) { j["marker"]["count"] = 31; }, "marker.count", "16 steps need 32 marker blocks"},
    {"trace_event_name", [](Json& j) { j["trace"]["events"][0] = "block/a/b"; }, "trace.events[0]", "subsystem/event"},
    {"trace_function_space", [](Json& j) { j["trace"]["functions"][1] = "do mpage"; }, "trace.functions[1]", "function name"},
    {"trace_buffer_negative", [](Json& j) { j["trace"]["buffer_kb"] = -1; }, "trace.buffer_kb", "between 0"},
    {"hint_not_object", [](Json& j) { j["trace"]["filter_hint"] = 3; }, "trace.filter_hint", "expected an object"},
    {"hint_unknown", [](Json& j) { j["trace"]["filter_hint"] = {{"lines", {1}}, {"selected", {"f"}}, {"extra", 1}}; },
     "trace.filter_hint.extra", "unknown field"},
    {"hint_no_lines", [](Json& j) { j["trace"]["filter_hint"] = {{"selected", {"f"}}}; }, "trace.filter_hint.lines", "missing"},
    {"hint_line_zero", [](Json& j) { j["trace"]["filter_hint"] = {{"lines", {0}}, {"selected", {"f"}}}; }, "trace.filter_hint.lines[0]",
     "above the one before"},
    {"hint_lines_descending", [](Json& j) { j["trace"]["filter_hint"] = {{"lines", {5, 3}}, {"selected", {"f"}}}; },
     "trace.filter_hint.lines[1]", "above the one before"},
    {"hint_line_negative", [](Json& j) { j["trace"]["filter_hint"] = {{"lines", {-2}}, {"selected", {"f"}}}; },
     "trace.filter_hint.lines[0]", "got an integer"},
    {"hint_line_huge", [](Json& j) { j["trace"]["filter_hint"] = {{"lines", {4194305}}, {"selected", {"f"}}}; },
     "trace.filter_hint.lines[0]", "at most 4194304"},
    {"hint_bad_name", [](Json& j) { j["trace"]["filter_hint"] = {{"lines", {1}}, {"selected", {"a b"}}}; }, "trace.filter_hint.selected[0]",
     "function name"},
    {"hint_lines_without_names", [](Json& j) { j["trace"]["filter_hint"] = {{"lines", {1}}, {"selected", Json::array()}}; },
     "trace.filter_hint.lines", "or neither"},
    {"timeout_zero", [](Json& j) { j["step_timeout_s"] = 0; }, "step_timeout_s", "between 1"},
    {"timeout_fraction", [](Json& j) { j["step_timeout_s"] = 1.5; }, "step_timeout_s", "got a fraction"},
    {"steps_missing", [](Json& j) { j.erase("steps"); }, "steps", "missing"},
    {"steps_not_list", [](Json& j) { j["steps"] = Json::object(); }, "steps", "expected a list"},
    {"step_not_object", [](Json& j) { j["steps"][1] = "sync"; }, "steps[1]", "expected an object"},
    {"op_missing", [](Json& j) { j["steps"][1].erase("op"); }, "steps[1].op", "missing"},
    {"op_unknown", [](Json& j) { j["steps"][1]["op"] = "reed"; }, "steps[1].op", "unknown op 'reed'"},
    {"field_for_other_op", [](Json& j) { j["steps"][1]["path"] = "/x"; }, "steps[1].path", "unknown field for op drop_caches"},
    {"misspelt_field", [](Json& j) { j["steps"][2]["lenght"] = 1; }, "steps[2].lenght", "unknown field for op read"},
    // Control bytes in a quoted name are spelt out: what() stops at a NUL.
    {"key_with_nul", [](Json& j) { j["steps"][2][std::string("a\0b", 3)] = 1; }, "steps[2].a\\x00b", "unknown field for op read"},
    {"op_with_newline", [](Json& j) { j["steps"][1]["op"] = "re\nad"; }, "steps[1].op", "unknown op 're\\x0aad'"},
    {"read_no_path", [](Json& j) { j["steps"][2].erase("path"); }, "steps[2].path", "missing"},
    {"read_length_below", [](Json& j) { j["steps"][2]["length"] = -2; }, "steps[2].length", "between -1"},
    {"read_bs_zero", [](Json& j) { j["steps"][2]["bs"] = 0; }, "steps[2].bs", "between 1"},
    {"read_direct_string", [](Json& j) { j["steps"][2]["direct"] = "yes"; }, "steps[2].direct", "true or false"},
    {"read_sha256_string", [](Json& j) { j["steps"][2]["sha256"] = "yes"; }, "steps[2].sha256", "true or false"},
    {"fsync_sha256", [](Json& j) { j["steps"][6]["sha256"] = true; }, "steps[6].sha256", "unknown field for op fsync"},
    {"read_offset_negative", [](Json& j) { j["steps"][2]["offset"] = -4096; }, "steps[2].offset", "between 0"},
    {"write_no_length", [](Json& j) { j["steps"][3].erase("length"); }, "steps[3].length", "missing"},
    {"write_pattern", [](Json& j) { j["steps"][3]["pattern"] = "ones"; }, "steps[3].pattern", "\"random\" or \"zero\""},
    {"write_seed_negative", [](Json& j) { j["steps"][3]["seed"] = -1; }, "steps[3].seed", "not be negative"},
    {"path_and_fd", [](Json& j) { j["steps"][5]["path"] = "/x"; }, "steps[5].fd", "not both"},
    {"fd_with_direct", [](Json& j) { j["steps"][5]["direct"] = true; }, "steps[5].direct", "open step"},
    {"fd_not_opened", [](Json& j) { j["steps"][6]["fd"] = "b"; }, "steps[6].fd", "'b' is not opened"},
    {"fd_after_close", [](Json& j) { j["steps"][9] = {{"op", "fsync"}, {"fd", "a"}}; }, "steps[9].fd", "not opened"},
    {"fd_bad_name", [](Json& j) { j["steps"][4]["fd"] = "a b"; }, "steps[4].fd", "must be a name"},
    {"open_access", [](Json& j) { j["steps"][4]["access"] = "a"; }, "steps[4].access", "\"r\", \"w\" or \"rw\""},
    {"open_create_readonly", [](Json& j) { j["steps"][4]["access"] = "r"; }, "steps[4].create", "needs access"},
    {"drop_caches_4", [](Json& j) { j["steps"][1]["value"] = 4; }, "steps[1].value", "between 1 and 3"},
    {"truncate_no_size", [](Json& j) { j["steps"][9].erase("size"); }, "steps[9].size", "missing"},
    {"mmap_zero_length", [](Json& j) { j["steps"][10]["length"] = 0; }, "steps[10].length", "between 1"},
    {"mmap_fd", [](Json& j) { j["steps"][10]["fd"] = "a"; }, "steps[10].fd", "unknown field for op mmap_write"},
    {"sleep_no_ms", [](Json& j) { j["steps"][12].erase("ms"); }, "steps[12].ms", "missing"},
    {"rename_no_to", [](Json& j) { j["steps"][13].erase("to"); }, "steps[13].to", "missing"},
    {"rename_relative", [](Json& j) { j["steps"][13]["to"] = "big.bin"; }, "steps[13].to", "absolute path"},
    {"cpu_negative", [](Json& j) { j["steps"][2]["cpu"] = -1; }, "steps[2].cpu", "between 0"},
    {"cpu_string", [](Json& j) { j["steps"][2]["cpu"] = "1"; }, "steps[2].cpu", "expected an integer"},
    {"mount_without_fstype", [](Json& j) { j["fstype"] = ""; }, "steps[0].op", "fstype is empty"},
    {"check_on_steps_mount",
     [](Json& j) { j["extent_check"] = {{"mountpoint", "/mnt"}, {"fstype", "vfat"}, {"files", {"/f"}}}; },
     "extent_check.mountpoint", "must differ from the steps' mountpoint"},
    {"check_no_fstype", [](Json& j) { j["extent_check"] = {{"mountpoint", "/run/c"}, {"files", {"/f"}}}; }, "extent_check.fstype",
     "needs its filesystem type"},
    {"check_relative_file", [](Json& j) { j["extent_check"] = {{"mountpoint", "/run/c"}, {"fstype", "vfat"}, {"files", {"f"}}}; },
     "extent_check.files[0]", "starting with /"},
    {"check_unknown", [](Json& j) { j["extent_check"] = {{"mountpoint", "/run/c"}, {"fstype", "vfat"}, {"files", {"/f"}}, {"ro", true}}; },
     "extent_check.ro", "unknown field"},
};

TEST(RunSpec, ExtentCheck) {
    Json j = good();
    EXPECT_FALSE(parse(j).extent_check);
    j["extent_check"] = {{"mountpoint", "/run/blkrig-extent-check"}, {"fstype", "ext4"}, {"files", {"/a.bin", "/d/b.bin"}}};
    const RunSpec r = parse(j);
    ASSERT_TRUE(r.extent_check);
    EXPECT_EQ(r.extent_check->mountpoint, "/run/blkrig-extent-check");
    EXPECT_EQ(r.extent_check->fstype, "ext4");
    EXPECT_EQ(r.extent_check->options, "");
    EXPECT_EQ(r.extent_check->files, (std::vector<std::string>{"/a.bin", "/d/b.bin"}));
}

TEST(RunSpec, FilterHint) {
    Json j = good();
    EXPECT_FALSE(parse(j).trace.hint.has_value());
    j["trace"]["filter_hint"] = {{"lines", {12, 40, 41}}, {"selected", {"mpage_readahead", "mpage_end_io", "x.isra.0"}}, {"missing", {"gone"}}};
    const RunSpec r = parse(j);
    ASSERT_TRUE(r.trace.hint.has_value());
    EXPECT_EQ(r.trace.hint->lines, (std::vector<uint64_t>{12, 40, 41}));
    EXPECT_EQ(r.trace.hint->selected, (std::vector<std::string>{"mpage_readahead", "mpage_end_io", "x.isra.0"}));
    EXPECT_EQ(r.trace.hint->missing, (std::vector<std::string>{"gone"}));
}

class BadRunSpec : public ::testing::TestWithParam<Bad> {};

TEST_P(BadRunSpec, NamesTheField) {
    Json j = good();
    GetParam().edit(j);
    try {
        parse(j);
        FAIL() << "accepted";
    } catch (const SpecError& e) {
        EXPECT_EQ(e.field(), GetParam().field) << e.what();
        EXPECT_NE(std::string(e.what()).find(GetParam().says), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).rfind(GetParam().field, 0), 0u) << e.what();
    }
}

INSTANTIATE_TEST_SUITE_P(OneMistakeEach, BadRunSpec, ::testing::ValuesIn(kBad),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(RunSpec, RefusesTextThatIsNotJson) {
    try {
        parse_run_spec("{\"version\": 1,");
        FAIL() << "accepted";
    } catch (const SpecError& e) {
        EXPECT_EQ(e.field(), "");
        EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
    }
    EXPECT_THROW(parse_run_spec("[]"), SpecError);
    // Found by fuzz_run_spec: a number beyond a double is out_of_range, not
    // a parse_error, and escaped the parser (PID 1 would have died of it).
    try {
        parse_run_spec(R"({"version": 1, "step_timeout_s": 999e999, "steps": []})");
        FAIL() << "accepted";
    } catch (const SpecError& e) {
        EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("999e999"), std::string::npos) << e.what();
    }
}

TEST(RunSpec, OpNamesRoundTrip) {
    for (const Op op : {Op::mount, Op::umount, Op::read, Op::write, Op::fsync, Op::fdatasync, Op::sync, Op::drop_caches,
                        Op::truncate, Op::mmap_write, Op::fiemap, Op::sleep, Op::open, Op::close})
        EXPECT_EQ(op_from_name(op_name(op)), op);
    EXPECT_FALSE(op_from_name("reed"));
}

}  // namespace
}  // namespace blkrig::agent
