// The fault engine: rules with ids and counters, consulted for every request
// between parsing and the store. Rules can be added and removed while
// requests flow (the control plane will call add/remove/list from its own
// thread). The first rule that fires decides; every rule that matches counts.
// Rules are indexed by op and by 32 MiB sector bucket, so a request only
// looks at the rules that could overlap it (bench/fault_match_bench measures
// the cost with 1,000 rules).
#pragma once

#include "faults/rule.hpp"

#include <array>
#include <cstdint>
#include <mutex>
#include <random>
#include <unordered_map>
#include <string>
#include <vector>

namespace blkrig::faults {

struct Decision {
    bool fire = false;
    uint32_t rule_id = 0;
    Action action;  // for a random delay, delay_ns is the one drawn
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

    // sectors: the request's length in 512-byte sectors (0 for flush);
    // depth: requests outstanding on the queue, this one included;
    // elapsed_ns: device time, for rules with a time window.
    Decision decide(uint32_t virtio_type, uint64_t sector, uint64_t sectors, uint16_t queue, uint32_t depth = 1,
                    uint64_t elapsed_ns = 0);

private:
    struct Entry {
        uint32_t id;
        Rule rule;
        uint64_t matched = 0;
        uint64_t fired = 0;
        std::mt19937_64 rng;
    };
    // Positions into rules_, ascending, per op bit.
    struct OpIndex {
        std::vector<uint32_t> wide;  // rules spanning many buckets (or the whole disk)
        std::unordered_map<uint64_t, std::vector<uint32_t>> buckets;
    };
    static constexpr unsigned kBucketShift = 16;  // 2^16 sectors = 32 MiB
    static constexpr uint64_t kMaxBucketsPerRule = 64;
    void reindex();  // under mu_

    mutable std::mutex mu_;
    std::vector<Entry> rules_;
    std::array<OpIndex, 6> index_;
    std::vector<uint32_t> scratch_;
    uint32_t next_id_ = 1;
    int64_t last_marker_ = -1;
};

}  // namespace blkrig::faults
