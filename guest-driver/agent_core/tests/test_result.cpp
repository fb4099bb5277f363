// Result records as JSON lines: field names and order as the protocol says,
// optional fields only when set, and step lines read back unchanged.
#include "agent_core/result.hpp"

#include <gtest/gtest.h>

#include <cerrno>

namespace blkrig::agent {
namespace {

TEST(ResultEncoding, Hello) {
    Hello h;
    h.kernel = "6.1.0-57-cloud-amd64";
    h.modules = {"virtio_blk"};
    h.functions_traced = {"do_mpage_readpage"};
    h.functions_missing = {"mpage_read_end_io"};
    h.filter_lines = {3, 17};
    h.filter_hint = "used";
    h.events = {"block/block_bio_queue"};
    h.events_missing = {"block/nope"};
    h.queue = {{"scheduler", "[none] mq-deadline"}, {"nomerges", "2"}};
    h.sysfs = {{"queue/logical_block_size", "4096"}, {"ro", "0"}, {"mq/0/cpu_list", "0"}};
    h.cpus_online = "0-1";
    h.t_ns = 5;
    EXPECT_EQ(encode(h),
              R"({"type":"hello","kernel":"6.1.0-57-cloud-amd64","modules":["virtio_blk"],"functions_traced":["do_mpage_readpage"],)"
              R"("functions_missing":["mpage_read_end_io"],"filter_lines":[3,17],"filter_hint":"used",)"
              R"("events":["block/block_bio_queue"],"events_missing":["block/nope"],)"
              R"("queue":{"scheduler":"[none] mq-deadline","nomerges":"2"},)"
              R"("sysfs":{"queue/logical_block_size":"4096","ro":"0","mq/0/cpu_list":"0"},"cpus_online":"0-1","t_ns":5})"
              "\n");
}

TEST(ResultEncoding, ReadStep) {
    StepResult r;
    r.index = 2;
    r.op = Op::read;
    r.bytes = 4194304;
    r.xxh128 = "cd";
    r.sha256 = "ab";
    r.t_start_ns = 10;
    r.t_end_ns = 20;
    r.marker_begin = 4;
    r.marker_end = 5;
    EXPECT_EQ(encode(r), R"({"type":"step","index":2,"op":"read","ret":0,"errno":0,"error":"","call":"","bytes":4194304,)"
                         R"("xxh128":"cd","sha256":"ab","t_start_ns":10,"t_end_ns":20,"marker_begin":4,"marker_end":5})"
                         "\n");
}

TEST(ResultEncoding, FailedStepNamesCallAndErrno) {
    StepResult r;
    r.index = 0;
    r.op = Op::mount;
    r.fail("mount", EINVAL);
    r.marker_error = "marker 1 at byte 512: pread: EIO";
    EXPECT_EQ(encode(r), R"({"type":"step","index":0,"op":"mount","ret":-1,"errno":22,"error":"EINVAL","call":"mount",)"
                         R"("t_start_ns":0,"t_end_ns":0,"marker_begin":-1,"marker_end":-1,"marker_error":"marker 1 at byte 512: pread: EIO"})"
                         "\n");
}

TEST(ResultEncoding, Timeout) {
    StepResult r;
    r.index = 3;
    r.op = Op::sleep;
    r.fail_text("timeout");
    EXPECT_EQ(encode(r), R"({"type":"step","index":3,"op":"sleep","ret":-1,"errno":0,"error":"timeout","call":"",)"
                         R"("t_start_ns":0,"t_end_ns":0,"marker_begin":-1,"marker_end":-1})"
                         "\n");
}

TEST(ResultEncoding, Extents) {
    StepResult r;
    r.op = Op::fiemap;
    r.extents = std::vector<Extent>{{0, 1048576, 4096, 0}, {4096, 2097152, 8192, 1}};
    const std::string line = encode(r);
    EXPECT_NE(line.find(R"("extents":[{"logical":0,"physical":1048576,"length":4096,"flags":0},)"
                        R"({"logical":4096,"physical":2097152,"length":8192,"flags":1}])"),
              std::string::npos)
        << line;
}

TEST(ResultEncoding, BeforeSteps) {
    BeforeSteps b;
    b.disk_pages = 16384;
    b.resident_before = 3;
    b.rcu_expedited_before = "0";
    b.rcu_expedited_after = "0";
    EXPECT_EQ(encode(b), R"({"type":"before_steps","extent_check":null,)"
                         R"("disk_cache":{"pages":16384,"resident_before":3,"resident_after":0,"buffers_kb_before":-1,"buffers_kb_after":-1,"error":""},)"
                         R"("rcu_expedited":{"before":"0","after":"0"},"t_start_ns":0,"t_end_ns":0})"
                         "\n");
    StepResult ok;
    ok.extents = std::vector<Extent>{{0, 4096, 8192, 1}};
    StepResult bad;
    bad.fail("ioctl FS_IOC_FIEMAP", EOPNOTSUPP);
    b.extent_check = ExtentCheckResult{"", {{"/a", ok}, {"/b", bad}}};
    const std::string line = encode(b);
    EXPECT_NE(line.find(R"("extent_check":{"error":"","files":[{"path":"/a","ret":0,"errno":0,"error":"","call":"",)"
                        R"("extents":[{"logical":0,"physical":4096,"length":8192,"flags":1}]},)"
                        R"({"path":"/b","ret":-1,"errno":95,"error":"EOPNOTSUPP","call":"ioctl FS_IOC_FIEMAP"}]})"),
              std::string::npos)
        << line;
}

TEST(ResultEncoding, ErrorAndDone) {
    EXPECT_EQ(encode(ErrorRecord{"queue knob nomerges: \"x\""}), R"({"type":"error","what":"queue knob nomerges: \"x\""})"
                                                                 "\n");
    EXPECT_EQ(encode(Done{7}), R"({"type":"done","steps":7})"
                               "\n");
}

TEST(ResultEncoding, InvalidUtf8IsReplacedNotThrown) {
    EXPECT_EQ(encode(ErrorRecord{"bad \xff byte"}), "{\"type\":\"error\",\"what\":\"bad \xEF\xBF\xBD byte\"}\n");
}

TEST(ResultEncoding, StepLinesDecodeToTheSameRecord) {
    StepResult r;
    r.index = 9;
    r.op = Op::fiemap;
    r.fail("ioctl FIBMAP", EIO);
    r.bytes = 1;
    r.sha256 = "00";
    r.xxh128 = "11";
    r.extents = std::vector<Extent>{{1, 2, 3, 4}};
    r.t_start_ns = 100;
    r.t_end_ns = 200;
    r.marker_begin = 18;
    r.marker_end = -1;
    r.marker_error = "x";
    const auto back = decode_step(encode(r));
    ASSERT_TRUE(back);
    EXPECT_EQ(encode(*back), encode(r));
}

TEST(ResultEncoding, MountStepCarriesItsOptions) {
    StepResult r;
    r.op = Op::mount;
    r.mount_options = "rw,noatime,fmask=0022";
    const std::string line = encode(r);
    EXPECT_NE(line.find(R"("mount_options":"rw,noatime,fmask=0022")"), std::string::npos) << line;
    const auto back = decode_step(line);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->mount_options, r.mount_options);
    StepResult plain;
    EXPECT_EQ(encode(plain).find("mount_options"), std::string::npos);
}

TEST(ResultEncoding, DecodeRefusesPartialLines) {
    StepResult r;
    const std::string line = encode(r);
    EXPECT_FALSE(decode_step(line.substr(0, line.size() - 1)));
    EXPECT_FALSE(decode_step(line.substr(0, line.size() / 2) + "\n"));
    EXPECT_FALSE(decode_step(encode(Done{1})));
    EXPECT_FALSE(decode_step(""));
}

TEST(ResultEncoding, ErrnoNames) {
    EXPECT_EQ(errno_name(EIO), "EIO");
    EXPECT_EQ(errno_name(ENOSPC), "ENOSPC");
    EXPECT_EQ(errno_name(4242), "errno 4242");
}

}  // namespace
}  // namespace blkrig::agent
