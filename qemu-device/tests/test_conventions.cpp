// The conventions every part shares (common/ops.hpp, markers.hpp,
// sectors.hpp), seen through the parts that use them: the trace's labels
// and a fault rule's op= are the table's names, the stats rows follow it.
#include "blk/device.hpp"
#include "common/markers.hpp"
#include "common/ops.hpp"
#include "common/sectors.hpp"
#include "faults/rule.hpp"
#include "trace/format.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

using namespace blkrig;

TEST(Ops, NamesAreUniqueAndTheTraceLabelsTypesWithThem) {
    std::set<std::string_view> names;
    std::set<uint32_t> types;
    for (const auto& o : ops::kOps) {
        EXPECT_TRUE(names.insert(o.name).second) << o.name;
        EXPECT_TRUE(types.insert(o.type).second) << o.type;
        EXPECT_EQ(trace::op_label(o.type), o.name);
        EXPECT_EQ(ops::find(o.name), &o);
    }
    EXPECT_EQ(trace::op_label(trace::kTypeUnknown), ops::kInvalidName);
    EXPECT_EQ(trace::op_label(99), "type_99");
    EXPECT_EQ(ops::rule_bit(99), ops::kRuleOther);
}

TEST(Ops, ARuleNamesExactlyTheOpsWithABit) {
    for (const auto& o : ops::kOps) {
        const auto r = faults::parse_rule("ioerr op=" + std::string(o.name));
        if (o.rule_bit) {
            ASSERT_TRUE(std::holds_alternative<faults::Rule>(r)) << o.name;
            const auto& rule = std::get<faults::Rule>(r);
            EXPECT_EQ(rule.ops, o.rule_bit);
            EXPECT_EQ(faults::to_text(rule), "ioerr op=" + std::string(o.name));
            EXPECT_EQ(faults::op_bit(o.type), o.rule_bit);
        } else {
            ASSERT_TRUE(std::holds_alternative<faults::RuleError>(r)) << o.name;
            EXPECT_EQ(faults::op_bit(o.type), faults::kOpOther);
        }
    }
}

TEST(Ops, ActionNamesAreTheRulesAndTheTraces) {
    for (const auto& a : ops::kActions) {
        EXPECT_EQ(trace::fault_action_name(a.code), a.name);
        if (a.in_rules) {
            EXPECT_EQ(faults::to_string(static_cast<faults::ActionKind>(a.code)), a.name);
        }
    }
    EXPECT_EQ(ops::kPowerOff, trace::kFaultPowerOff);
    EXPECT_STREQ(trace::fault_action_name(77), "unknown");
}

TEST(Markers, StepIIsBracketedBy2iAnd2iPlus1) {
    EXPECT_EQ(markers::before_step(0), 0u);
    EXPECT_EQ(markers::after_step(0), 1u);
    EXPECT_EQ(markers::before_step(3), 6u);
    EXPECT_EQ(markers::after_step(3), 7u);
    EXPECT_EQ(markers::needed_for(4), 8u);
    EXPECT_EQ(markers::begin_of(-1, 3), 6);
    EXPECT_EQ(markers::end_of(-1, 3), 7);
    EXPECT_EQ(markers::begin_of(10, 3), 10);  // what the agent recorded wins
}

TEST(Sectors, ALengthCoversTheSectorsItTouches) {
    EXPECT_EQ(sectors::covering(0), 0u);
    EXPECT_EQ(sectors::covering(1), 1u);
    EXPECT_EQ(sectors::covering(512), 1u);
    EXPECT_EQ(sectors::covering(513), 2u);
    EXPECT_EQ(sectors::to_bytes(8), 4096u);
    EXPECT_EQ(sectors::of_offset(1023), 1u);
    EXPECT_EQ(blk::kSectorSize, sectors::kSize);
}
