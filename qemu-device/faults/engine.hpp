// The fault engine: rules with ids and counters, consulted for every request
// between parsing and the store. Rules can be added and removed while
// requests flow (the control plane will call add/remove/list from its own
// thread). The first rule that fires decides; every rule that matches counts.
// Matching is a scan over rules in id order, pre-filtered by op; an index by
// sector is the next step if thousands of rules are needed.
#pragma once

#include "faults/rule.hpp"

#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace blkrig::faults {

struct Decision {
    bool fire = false;
    uint32_t rule_id = 0;
    Action action;
};

struct RuleStatus {
    uint32_t id;
    std::string text;
    uint64_t matched;
    uint64_t fired;
};

class Engine {
public:
    uint32_t add(const Rule& r);
    bool remove(uint32_t id);
    void clear();
    std::vector<RuleStatus> list() const;
    bool empty() const;

    // The device read marker `index`: rules waiting for it (or an earlier
    // one) are armed from now on.
    void marker(uint32_t index);

    // sectors: the request's length in 512-byte sectors (0 for flush).
    Decision decide(uint32_t virtio_type, uint64_t sector, uint64_t sectors, uint16_t queue);

private:
    struct Entry {
        uint32_t id;
        Rule rule;
        uint64_t matched = 0;
        uint64_t fired = 0;
        std::mt19937_64 rng;
    };
    mutable std::mutex mu_;
    std::vector<Entry> rules_;
    uint32_t next_id_ = 1;
    int64_t last_marker_ = -1;
};

}  // namespace blkrig::faults
