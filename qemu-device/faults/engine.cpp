#include "faults/engine.hpp"

#include <algorithm>
#include <bit>

namespace blkrig::faults {

uint32_t Engine::add(const Rule& r) {
    std::lock_guard lock(mu_);
    const uint32_t id = next_id_++;
    rules_.push_back(Entry{id, r, 0, 0, std::mt19937_64(r.seed)});
    reindex();
    return id;
}

bool Engine::remove(uint32_t id) {
    std::lock_guard lock(mu_);
    auto it = std::find_if(rules_.begin(), rules_.end(), [&](const Entry& e) { return e.id == id; });
    if (it == rules_.end()) return false;
    rules_.erase(it);
    reindex();
    return true;
}

void Engine::clear() {
    std::lock_guard lock(mu_);
    rules_.clear();
    reindex();
}

void Engine::reindex() {
    for (auto& ix : index_) ix = OpIndex{};
    for (uint32_t pos = 0; pos < rules_.size(); ++pos) {
        const Rule& r = rules_[pos].rule;
        const uint64_t b0 = r.first_sector >> kBucketShift, b1 = r.last_sector >> kBucketShift;
        for (unsigned bit = 0; bit < index_.size(); ++bit) {
            if (!(r.ops & (1u << bit))) continue;
            auto& ix = index_[bit];
            if (b1 - b0 >= kMaxBucketsPerRule) ix.wide.push_back(pos);
            else
                for (uint64_t b = b0; b <= b1; ++b) ix.buckets[b].push_back(pos);
        }
    }
}

bool Engine::empty() const {
    std::lock_guard lock(mu_);
    return rules_.empty();
}

std::vector<RuleStatus> Engine::list() const {
    std::lock_guard lock(mu_);
    std::vector<RuleStatus> out;
    for (const auto& e : rules_) out.push_back({e.id, to_text(e.rule), e.matched, e.fired});
    return out;
}

void Engine::marker(uint32_t index) {
    std::lock_guard lock(mu_);
    last_marker_ = std::max<int64_t>(last_marker_, index);
}

Decision Engine::decide(uint32_t virtio_type, uint64_t sector, uint64_t sectors, uint16_t queue, uint32_t depth,
                        uint64_t elapsed_ns) {
    const uint8_t op = op_bit(virtio_type);
    // Requests without a sector range (flush) match only rules without one.
    const bool ranged = sectors > 0;
    const uint64_t last = ranged ? sector + sectors - 1 : sector;
    Decision d;
    std::lock_guard lock(mu_);
    if (rules_.empty()) return d;

    // Candidates in id order: the op's wide rules and those in the request's buckets.
    const auto& ix = index_[std::countr_zero(static_cast<unsigned>(op))];
    scratch_.assign(ix.wide.begin(), ix.wide.end());
    if (ranged) {
        const uint64_t b0 = sector >> kBucketShift, b1 = last >> kBucketShift;
        if (b1 - b0 >= kMaxBucketsPerRule) {
            for (uint32_t pos = 0; pos < rules_.size(); ++pos)
                if (rules_[pos].rule.ops & op) scratch_.push_back(pos);
        } else {
            for (uint64_t b = b0; b <= b1; ++b)
                if (auto it = ix.buckets.find(b); it != ix.buckets.end()) scratch_.insert(scratch_.end(), it->second.begin(), it->second.end());
        }
        std::sort(scratch_.begin(), scratch_.end());
        scratch_.erase(std::unique(scratch_.begin(), scratch_.end()), scratch_.end());
    }

    for (const uint32_t pos : scratch_) {
        auto& e = rules_[pos];
        const Rule& r = e.rule;
        if (r.after_marker > last_marker_) continue;
        if (r.until_marker >= 0 && last_marker_ >= r.until_marker) continue;
        if (r.queue && *r.queue != queue) continue;
        if (depth < r.min_depth) continue;
        if (elapsed_ns < r.time_from_ns || elapsed_ns >= r.time_to_ns) continue;
        const bool whole_disk = r.first_sector == 0 && r.last_sector == UINT64_MAX;
        if (!whole_disk && (!ranged || last < r.first_sector || sector > r.last_sector)) continue;
        const uint64_t n = ++e.matched;
        bool fire = true;
        if (r.nth) fire = n == r.nth;
        else if (r.every) fire = n % r.every == 0;
        else if (r.first) fire = n <= r.first;
        if (fire && r.probability < 1.0) fire = std::uniform_real_distribution<double>(0.0, 1.0)(e.rng) < r.probability;
        if (fire && !d.fire) {
            ++e.fired;
            d = {true, e.id, r.action};
            if (r.action.kind == ActionKind::delay && r.action.delay_max_ns)
                d.action.delay_ns = std::uniform_int_distribution<uint64_t>(r.action.delay_ns, r.action.delay_max_ns)(e.rng);
        }
    }
    return d;
}

}  // namespace blkrig::faults
