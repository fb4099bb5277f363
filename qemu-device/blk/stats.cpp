#include "blk/stats.hpp"
#include "blk/device.hpp"

#include <linux/virtio_blk.h>

#include <algorithm>
#include <bit>
#include <string>

namespace blkrig::blk {

namespace {
// A request's row: its op's place in the table, or the last ("other").
size_t row_of(uint32_t type) {
    const ops::Op* o = ops::find(type);
    return o ? static_cast<size_t>(o - std::begin(ops::kOps)) : std::size(ops::kOps);
}
std::string row_name(size_t row) { return row < std::size(ops::kOps) ? std::string(ops::kOps[row].name) : "other"; }
}  // namespace

void Stats::count(const trace::RequestRecord& r) {
    auto& s = rows_[row_of(r.type)];
    s.count.fetch_add(1, std::memory_order_relaxed);
    s.bytes.fetch_add(r.bytes, std::memory_order_relaxed);
    if (r.status != VIRTIO_BLK_S_OK) s.errors.fetch_add(1, std::memory_order_relaxed);
    const uint64_t lat = r.t_complete_ns - std::min(r.t_submit_ns, r.t_complete_ns);
    const size_t b = std::min<size_t>(s.latency_log2.size() - 1, static_cast<size_t>(std::bit_width(lat)));
    s.latency_log2[b].fetch_add(1, std::memory_order_relaxed);
}

nlohmann::json Stats::to_json() const {
    nlohmann::json out = nlohmann::json::object();
    for (size_t i = 0; i < rows_.size(); ++i) {
        const auto& s = rows_[i];
        const uint64_t n = s.count.load();
        if (n == 0) continue;
        auto pct = [&](double p) -> uint64_t {
            const auto want = static_cast<uint64_t>(p * static_cast<double>(n) + 0.5);
            uint64_t seen = 0;
            for (size_t b = 0; b < s.latency_log2.size(); ++b) {
                seen += s.latency_log2[b].load();
                if (seen >= std::max<uint64_t>(want, 1)) return uint64_t{1} << b;
            }
            return 0;
        };
        out[row_name(i)] = {{"count", n},
                            {"bytes", s.bytes.load()},
                            {"errors", s.errors.load()},
                            {"latency_p50_ns_below", pct(0.5)},
                            {"latency_p99_ns_below", pct(0.99)}};
    }
    return out;
}

// The device's side of it.
nlohmann::json BlkDevice::stats_json() const {
    nlohmann::json out = stats_.to_json();
    if (wlog_) {
        out["write_log"] = {{"unflushed_writes", wlog_->unflushed()}, {"unflushed_bytes", wlog_->unflushed_bytes()}};
        if (auto e = wlog_->export_error(); !e.empty()) out["write_log"]["export_error"] = e;
    }
    return out;
}

}  // namespace blkrig::blk
