#include "faults/engine.hpp"

#include <algorithm>

namespace blkrig::faults {

uint32_t Engine::add(const Rule& r) {
    std::lock_guard lock(mu_);
    const uint32_t id = next_id_++;
    rules_.push_back(Entry{id, r, 0, 0, std::mt19937_64(r.seed)});
    return id;
}

bool Engine::remove(uint32_t id) {
    std::lock_guard lock(mu_);
    auto it = std::find_if(rules_.begin(), rules_.end(), [&](const Entry& e) { return e.id == id; });
    if (it == rules_.end()) return false;
    rules_.erase(it);
    return true;
}

void Engine::clear() {
    std::lock_guard lock(mu_);
    rules_.clear();
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

Decision Engine::decide(uint32_t virtio_type, uint64_t sector, uint64_t sectors, uint16_t queue) {
    const uint8_t op = op_bit(virtio_type);
    // Requests without a sector range (flush) match only rules without one.
    const bool ranged = sectors > 0;
    const uint64_t last = ranged ? sector + sectors - 1 : sector;
    Decision d;
    std::lock_guard lock(mu_);
    for (auto& e : rules_) {
        const Rule& r = e.rule;
        if (!(r.ops & op)) continue;
        if (r.after_marker > last_marker_) continue;
        if (r.until_marker >= 0 && last_marker_ >= r.until_marker) continue;
        if (r.queue && *r.queue != queue) continue;
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
        }
    }
    return d;
}

}  // namespace blkrig::faults
