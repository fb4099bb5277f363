// The one table of request operations and fault actions, with the names
// they have everywhere: in the trace reader's labels, fault rules, the
// device's stats, queries and `[[expect]]`, exports and Python (which reads
// them from the model). A new operation or action is added here.
#pragma once

#include <linux/virtio_blk.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace blkrig::ops {

struct Op {
    uint32_t type;          // VIRTIO_BLK_T_*
    std::string_view name;  // its name everywhere
    uint8_t rule_bit;       // its bit in a fault rule's op= set; 0: counted as "other"
    bool ranged;            // it names a sector range (the model's "data" requests)
};

// Rule bits (faults::OpBit names them): a rule's op= set is a mask of these.
inline constexpr uint8_t kRuleOther = 32;  // every type without a bit of its own
inline constexpr uint8_t kRuleAny = 63;

inline constexpr Op kOps[] = {
    {VIRTIO_BLK_T_IN, "read", 1, true},
    {VIRTIO_BLK_T_OUT, "write", 2, true},
    {VIRTIO_BLK_T_FLUSH, "flush", 4, false},
    {VIRTIO_BLK_T_GET_ID, "get_id", 0, false},
    {10, "get_lifetime", 0, false},  // VIRTIO_BLK_T_GET_LIFETIME, newer than some hosts' headers
    {VIRTIO_BLK_T_DISCARD, "discard", 8, true},
    {VIRTIO_BLK_T_WRITE_ZEROES, "write_zeroes", 16, true},
    {VIRTIO_BLK_T_SECURE_ERASE, "secure_erase", 0, true},
};

// The trace's label of a request whose header could not be read.
inline constexpr std::string_view kInvalidName = "invalid";

constexpr const Op* find(uint32_t type) {
    for (const auto& o : kOps)
        if (o.type == type) return &o;
    return nullptr;
}

constexpr const Op* find(std::string_view name) {
    for (const auto& o : kOps)
        if (o.name == name) return &o;
    return nullptr;
}

// A request type's bit in a fault rule's op= set.
constexpr uint8_t rule_bit(uint32_t type) {
    const Op* o = find(type);
    return o && o->rule_bit ? o->rule_bit : kRuleOther;
}

// Fault actions, by the code the trace's fault record carries (never
// renumber: traces on disk hold them). faults::ActionKind has the same
// values; power_off is the trace's, not a rule's.
struct Action {
    uint16_t code;
    std::string_view name;
    bool in_rules;  // a rule can name it
};

inline constexpr Action kActions[] = {
    {1, "ioerr", true}, {2, "unsupp", true}, {3, "delay", true}, {4, "hold", true},       {5, "reorder", true},
    {6, "torn", true},  {7, "corrupt", true}, {8, "lie", true},  {9, "power_off", false}, {10, "crash", true},
};
inline constexpr uint16_t kPowerOff = 9;

constexpr uint16_t action_code(std::string_view name) {
    for (const auto& a : kActions)
        if (a.name == name) return a.code;
    return 0;
}

constexpr std::optional<std::string_view> action_name(uint16_t code) {
    for (const auto& a : kActions)
        if (a.code == code) return a.name;
    return std::nullopt;
}

}  // namespace blkrig::ops
