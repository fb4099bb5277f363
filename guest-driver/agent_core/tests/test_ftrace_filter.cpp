// select_filters: names the kernel has are set once each, module suffixes
// are ignored, globs expand in list order, and the rest is reported missing.
#include "agent_core/ftrace_filter.hpp"

#include <gtest/gtest.h>

namespace blkrig::agent {
namespace {

const char* const kAvailable =
    "mpage_readahead\n"
    "do_mpage_readpage\n"
    "mpage_read_folio\n"
    "mpage_end_io\n"
    "__mpage_writepage\n"
    "mpage_writepages\n"
    "fat_readahead [fat]\n"
    "mpage_end_io\n"  // static functions can appear twice
    "blkdev_readahead\n";

using Names = std::vector<std::string>;

using Lines = std::vector<size_t>;

TEST(FtraceFilter, ExactNamesPresentAndMissing) {
    const auto s = select_filters(kAvailable, {"do_mpage_readpage", "mpage_read_end_io", "mpage_readahead"});
    EXPECT_EQ(s.selected, (Names{"do_mpage_readpage", "mpage_readahead"}));
    EXPECT_EQ(s.lines, (Lines{1, 2}));
    EXPECT_EQ(s.missing, (Names{"mpage_read_end_io"}));
}

TEST(FtraceFilter, EveryLineOfADuplicateName) {
    const auto s = select_filters(kAvailable, {"mpage_end_io", "mpage_end_io"});
    EXPECT_EQ(s.selected, (Names{"mpage_end_io"}));
    EXPECT_EQ(s.lines, (Lines{4, 8}));
    EXPECT_TRUE(s.missing.empty());
}

TEST(FtraceFilter, ModuleFunctionsByTheirName) {
    const auto s = select_filters(kAvailable, {"fat_readahead", "fat"});
    EXPECT_EQ(s.selected, (Names{"fat_readahead"}));
    EXPECT_EQ(s.lines, (Lines{7}));
    EXPECT_EQ(s.missing, (Names{"fat"}));
}

TEST(FtraceFilter, GlobsExpandInListOrderWithoutDuplicates) {
    const auto s = select_filters(kAvailable, {"mpage_end_io", "mpage_*", "*_readahead", "ext4_*"});
    EXPECT_EQ(s.selected, (Names{"mpage_end_io", "mpage_readahead", "mpage_read_folio", "mpage_writepages", "fat_readahead",
                                 "blkdev_readahead"}));
    EXPECT_EQ(s.lines, (Lines{1, 3, 4, 6, 7, 8, 9}));
    EXPECT_EQ(s.missing, (Names{"ext4_*"}));
}

TEST(FtraceFilter, BracketsAndQuestionMarks) {
    const auto s = select_filters(kAvailable, {"mpage_[er]*d_io", "?_mpage_readpage"});
    EXPECT_EQ(s.selected, (Names{"mpage_end_io"}));
    EXPECT_EQ(s.missing, (Names{"?_mpage_readpage"}));
}

TEST(FtraceFilter, EmptyInputs) {
    EXPECT_TRUE(select_filters("", {"x"}).selected.empty());
    EXPECT_EQ(select_filters("", {"x"}).missing, (Names{"x"}));
    const auto none = select_filters(kAvailable, {});
    EXPECT_TRUE(none.selected.empty());
    EXPECT_TRUE(none.missing.empty());
    // No trailing newline; blank lines still count as lines.
    EXPECT_EQ(select_filters("\n\na\nb", {"b"}).selected, (Names{"b"}));
    EXPECT_EQ(select_filters("\n\na\nb", {"b"}).lines, (Lines{4}));
}

TEST(FtraceFilter, ReadsBackWhatIsSet) {
    EXPECT_EQ(filter_names("do_mpage_readpage\nmpage_end_io\nmpage_end_io\nfat_readahead [fat]\n"),
              (Names{"do_mpage_readpage", "mpage_end_io", "fat_readahead"}));
    EXPECT_TRUE(filter_names("#### all functions enabled ####\n").empty());
    EXPECT_TRUE(filter_names("").empty());
}

}  // namespace
}  // namespace blkrig::agent
