// Per-op counts, bytes, errors and latency (log2 buckets) of completed
// requests, one row per op of the table (common/ops.hpp) and one for the
// rest: the control plane's `stats`. Lock-free: the queue threads count.
#pragma once

#include "common/ops.hpp"
#include "trace/format.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <iterator>

namespace blkrig::blk {

class Stats {
public:
    void count(const trace::RequestRecord& r);
    // Rows with at least one request, by op name ("other" last).
    nlohmann::json to_json() const;

private:
    struct Row {
        std::atomic<uint64_t> count{0}, bytes{0}, errors{0};
        std::array<std::atomic<uint64_t>, 48> latency_log2{};  // bucket b: latency < 2^b ns
    };
    std::array<Row, std::size(ops::kOps) + 1> rows_;
};

}  // namespace blkrig::blk
