#include "crash/states.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <random>
#include <set>
#include <stdexcept>

namespace blkrig::crash {

std::vector<Epoch> epochs_of(const WriteLogFile& log) {
    std::vector<Epoch> out(1);
    int64_t marker = -1;
    for (size_t i = 0; i < log.entries.size(); ++i) {
        const auto& e = log.entries[i];
        switch (e.kind) {
        case LogEntry::Kind::write:
        case LogEntry::Kind::discard:
            out.back().writes.push_back(i);
            out.back().sectors.push_back(e.kind == LogEntry::Kind::write ? e.nr_sectors : 0);
            break;
        case LogEntry::Kind::mark:
            if (int64_t m = marker_of(e); m >= 0) {
                marker = m;
                out.back().markers.push_back(m);
            }
            break;
        case LogEntry::Kind::flush:
            out.back().last_marker = marker;
            // A flush with nothing written since the last one ends no epoch.
            if (out.back().writes.empty()) break;
            out.back().flushed = true;
            out.emplace_back();
            break;
        }
        out.back().last_marker = marker;
    }
    return out;
}

Selection parse_selection(const std::string& text) {
    if (text == "flushes") return {Selection::Mode::flushes};
    if (text == "all") return {Selection::Mode::all};
    if (text.starts_with("random:")) {
        uint32_t n = 0;
        const char* p = text.data() + 7;
        const auto r = std::from_chars(p, text.data() + text.size(), n);
        if (r.ec == std::errc{} && r.ptr == text.data() + text.size() && n >= 1 && n <= 100000) return {Selection::Mode::random, n};
    }
    throw std::invalid_argument(fmt::format("--states '{}': want flushes, all or random:N with N from 1 to 100000", text));
}

Enumeration enumerate(const std::vector<Epoch>& epochs, const Selection& sel) {
    Enumeration out;
    std::mt19937_64 rng(sel.seed);
    for (size_t e = 0; e < epochs.size(); ++e) {
        const size_t n = epochs[e].writes.size();
        // Distinct states of this epoch: every subset but the full one when a
        // flush ends it (that disk is the next epoch's empty subset).
        out.total += std::pow(2.0L, static_cast<long double>(n)) - (epochs[e].flushed ? 1 : 0);
        std::set<std::vector<size_t>> chosen;
        auto take = [&](std::vector<size_t> kept, const char* why) {
            if (epochs[e].flushed && kept.size() == n && n > 0) return;  // checked as the next epoch's empty subset
            if (chosen.insert(kept).second) out.states.push_back({e, std::move(kept), why});
        };
        take({}, "flush");
        if (sel.mode == Selection::Mode::flushes) continue;
        std::vector<size_t> prefix;
        for (size_t i = 0; i < n; ++i) {
            if (sel.torn && i < epochs[e].sectors.size() && epochs[e].sectors[i] >= 2) {
                // Every subset of the others with each tear point is possible; the prefixes with two are checked.
                const uint64_t nr = epochs[e].sectors[i];
                out.total += static_cast<long double>(nr - 1) * std::pow(2.0L, static_cast<long double>(n - 1));
                for (uint64_t cut : std::set<uint64_t>{1, nr / 2}) out.states.push_back({e, prefix, "torn", static_cast<int64_t>(i), cut});
            }
            prefix.push_back(i);
            take(prefix, "prefix");
        }
        if (sel.mode == Selection::Mode::all && n <= kEveryUpTo) {
            for (uint64_t mask = 1; mask < (1ull << n); ++mask) {
                std::vector<size_t> kept;
                for (size_t i = 0; i < n; ++i)
                    if (mask & (1ull << i)) kept.push_back(i);
                take(std::move(kept), "subset");
            }
            continue;
        }
        const uint32_t want = sel.mode == Selection::Mode::all ? kSeeded : sel.n;
        // Seeded subsets, each write kept with probability 1/2; a few draws
        // more than wanted, since a draw may repeat one already taken.
        const long double distinct = std::pow(2.0L, static_cast<long double>(n));
        const size_t target = chosen.size() + static_cast<size_t>(std::min<long double>(want, distinct - chosen.size()));
        for (uint64_t tries = 0; chosen.size() < target && tries < 4ull * want + 16; ++tries) {
            std::vector<size_t> kept;
            for (size_t i = 0; i < n; ++i)
                if (rng() & 1) kept.push_back(i);
            take(std::move(kept), "seeded");
        }
    }
    return out;
}

}  // namespace blkrig::crash
