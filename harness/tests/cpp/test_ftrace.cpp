// The guest's ftrace text to events: function lines, block events as 6.1 and
// 6.12 print them, and lines that are kept as unparsed rather than lost.
#include "model/ftrace.hpp"

#include <gtest/gtest.h>

namespace blkrig::model {
namespace {

TEST(Ftrace, FunctionAndBlockEvents) {
    const char* text = R"(# tracer: function
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
              dd-76      [000] .....     3.123456: mpage_readahead <-read_pages
              dd-76      [000] .....     3.123460: do_mpage_readpage <-mpage_readahead
              dd-76      [000] d..1.     3.123470: block_bio_queue: 254,0 RA 2051 + 32 [dd]
   kworker/0:1H-33      [000] .....     3.123480: block_rq_issue: 254,0 RA 16384 () 2051 + 32 [kworker/0:1H]
          <idle>-0       [000] d.h1.     3.123490: block_rq_complete: 254,0 RA () 2051 + 32 [0]
              dd-76      [000] .....     3.123500: block_split: 254,0 R 2051 / 2307 [dd]
              dd-76      [000] .....     3.123510: block_rq_complete: 254,0 R () 264 + 8 [-5]
this line is not ftrace
)";
    const auto ev = parse_ftrace(text);
    ASSERT_EQ(ev.size(), 8u);
    EXPECT_EQ(ev[0]["event"], "function");
    EXPECT_EQ(ev[0]["function"], "mpage_readahead");
    EXPECT_EQ(ev[0]["parent"], "read_pages");
    EXPECT_EQ(ev[0]["task"], "dd");
    EXPECT_EQ(ev[0]["pid"], 76);
    EXPECT_DOUBLE_EQ(ev[0]["ts"].get<double>(), 3.123456);
    EXPECT_EQ(ev[2]["event"], "block_bio_queue");
    EXPECT_EQ(ev[2]["dev"], "254,0");
    EXPECT_EQ(ev[2]["rwbs"], "RA");
    EXPECT_EQ(ev[2]["sector"], 2051);
    EXPECT_EQ(ev[2]["nsect"], 32);
    EXPECT_EQ(ev[2]["comm"], "dd");
    EXPECT_EQ(ev[3]["task"], "kworker/0:1H");
    EXPECT_EQ(ev[3]["bytes"], 16384);
    EXPECT_EQ(ev[3]["sector"], 2051);
    EXPECT_EQ(ev[4]["event"], "block_rq_complete");
    EXPECT_EQ(ev[4]["error"], 0);
    EXPECT_EQ(ev[5]["new_sector"], 2307);
    EXPECT_EQ(ev[6]["error"], -5);
    EXPECT_EQ(ev[7]["event"], "unparsed");
}

TEST(Ftrace, NewerKernelsExtraFieldsAreSkipped) {
    // 6.12 prints ioprio fields between the byte count and the sector.
    const auto ev = parse_ftrace("  fio-90 [001] ..... 9.5: block_rq_issue: 254,0 WS 4096 () 100 + 8 none,0,0 [fio]\n");
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0]["sector"], 100);
    EXPECT_EQ(ev[0]["nsect"], 8);
    EXPECT_EQ(ev[0]["bytes"], 4096);
    EXPECT_EQ(ev[0]["comm"], "fio");
}

}  // namespace
}  // namespace blkrig::model
