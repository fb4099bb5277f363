// results.jsonl as the host reads it: every record type of the agent
// protocol taken field by field, and lines that are not records (cut short,
// wrong types, floats where integers go) named by line, never thrown.
#include "model/results.hpp"

#include <gtest/gtest.h>

namespace blkrig::model {
namespace {

bool has_problem(const AgentResults& r, const std::string& text) {
    for (const auto& p : r.problems)
        if (p.find(text) != std::string::npos) return true;
    return false;
}

TEST(Results, ReadsEveryRecordType) {
    const auto r = parse_results(
        R"({"type":"hello","kernel":"6.1.0","sysfs":{"mq/0/cpu_list":"0"},"queue":{"scheduler":"none"},"cpus_online":"0","t_ns":5})" "\n"
        R"({"type":"before_steps","extent_check":null,"disk_cache":{"pages":4,"resident_after":0,"buffers_kb_after":0,"error":""}})" "\n"
        R"({"type":"step","index":0,"op":"read","ret":0,"errno":0,"error":"","call":"","bytes":4096,"marker_begin":0,"marker_end":1})" "\n"
        R"({"type":"error","what":"a knob was refused"})" "\n"
        "\n"
        R"({"type":"done","steps":1})" "\n");
    EXPECT_TRUE(r.problems.empty()) << r.problems.front();
    EXPECT_EQ(r.hello.value("kernel", ""), "6.1.0");
    EXPECT_TRUE(r.before_steps.is_object());
    ASSERT_EQ(r.steps.size(), 1u);
    EXPECT_EQ(r.steps[0].line, 3u);
    EXPECT_EQ(r.steps[0].index, 0u);
    EXPECT_EQ(r.steps[0].record.value("bytes", 0), 4096);
    EXPECT_EQ(r.errors, std::vector<std::string>{"a knob was refused"});
    EXPECT_TRUE(r.done);
}

TEST(Results, ALineCutShortIsAProblemAndTheRestIsRead) {
    const auto r = parse_results("{\"type\":\"step\",\"index\":0,\"op\":\"re\n{\"type\":\"done\",\"steps\":0}");
    ASSERT_EQ(r.problems.size(), 1u);
    EXPECT_TRUE(has_problem(r, "line 1: not a JSON object")) << r.problems[0];
    EXPECT_TRUE(r.done);
}

TEST(Results, FieldsOfTheWrongTypeAreProblemsNotExceptions) {
    const auto r = parse_results(
        R"({"type":"step","index":"0"})" "\n"
        R"({"type":"step","index":1,"ret":"zero"})" "\n"
        R"({"type":"step","index":2,"bytes":-1})" "\n"
        R"({"type":"step","index":3,"marker_begin":1e300})" "\n"
        R"({"type":"step","index":4,"extents":[{"logical":0.5}]})" "\n"
        R"({"type":"hello","sysfs":{"ro":0}})" "\n"
        R"({"type":"before_steps","disk_cache":{"resident_after":"none"}})" "\n"
        R"({"type":"before_steps","extent_check":{"files":[{"ret":[]}]}})" "\n"
        R"({"type":7})" "\n"
        R"({"type":"error","what":1})" "\n"
        R"({"type":"done","steps":-2})" "\n"
        R"({"type":"goodbye"})" "\n");
    EXPECT_TRUE(r.steps.empty());
    EXPECT_TRUE(r.hello.is_null());
    EXPECT_TRUE(r.before_steps.is_null());
    EXPECT_TRUE(r.errors.empty());
    EXPECT_FALSE(r.done);
    ASSERT_EQ(r.problems.size(), 12u);
    EXPECT_TRUE(has_problem(r, "line 1: step record: \"index\" must be an unsigned integer"));
    EXPECT_TRUE(has_problem(r, "line 2: step record: \"ret\" must be an integer, got \"zero\""));
    EXPECT_TRUE(has_problem(r, "line 3: step record: \"bytes\" must be an unsigned integer, got -1"));
    EXPECT_TRUE(has_problem(r, "line 4: step record: \"marker_begin\" must be an integer"));
    EXPECT_TRUE(has_problem(r, "line 5: step record extents[0]: \"logical\" must be an unsigned integer"));
    EXPECT_TRUE(has_problem(r, "line 6: hello record: \"sysfs\" must be an object of strings"));
    EXPECT_TRUE(has_problem(r, "line 7: before_steps disk_cache: \"resident_after\""));
    EXPECT_TRUE(has_problem(r, "line 8: before_steps extent_check files[0]: \"ret\""));
    EXPECT_TRUE(has_problem(r, "line 9: a record without a \"type\" string"));
    EXPECT_TRUE(has_problem(r, "line 10: error record: \"what\""));
    EXPECT_TRUE(has_problem(r, "line 11: done record: \"steps\""));
    EXPECT_TRUE(has_problem(r, "line 12: unknown record type \"goodbye\""));
}

TEST(Results, BytesThatAreNotUtf8AreQuotedNotThrown) {
    const auto r = parse_results("\xff\xfe{\n");
    ASSERT_EQ(r.problems.size(), 1u);
    EXPECT_TRUE(has_problem(r, "line 1: not a JSON object"));
}

}  // namespace
}  // namespace blkrig::model
