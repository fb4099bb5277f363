// Cost of the fault engine on the request path: Engine::decide for a 4 KiB
// read at a random sector, with 0, 1, 1,000 and 10,000 rules on narrow
// sector ranges spread over a 64 GiB disk (plus, in the "wide" variants, one
// whole-disk rule for another op). Compare the rows: the 1,000-rule cost
// against the empty engine is the ratio docs/performance.md reports.
#include "faults/engine.hpp"

#include <benchmark/benchmark.h>

#include <random>
#include <string>

using namespace blkrig::faults;

namespace {

void fill(Engine& e, int64_t rules, bool wide) {
    const uint64_t span = (64ull << 30) / 512;
    for (int64_t k = 0; k < rules; ++k) {
        const uint64_t s = static_cast<uint64_t>(k) * (span / static_cast<uint64_t>(std::max<int64_t>(rules, 1)));
        auto r = parse_rule("ioerr op=read sector=" + std::to_string(s) + ".." + std::to_string(s + 7) + " nth=1000000000");
        e.add(std::get<Rule>(r));
    }
    if (wide) e.add(std::get<Rule>(parse_rule("delay=1ms op=write")));
}

void BM_Decide(benchmark::State& state) {
    Engine e;
    fill(e, state.range(0), state.range(1) != 0);
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<uint64_t> pick(0, (64ull << 30) / 512 - 8);
    for (auto _ : state) benchmark::DoNotOptimize(e.decide(0, pick(rng), 8, 0));
}
BENCHMARK(BM_Decide)->ArgsProduct({{0, 1, 1000, 10000}, {0, 1}})->ArgNames({"rules", "wide"});

}  // namespace

BENCHMARK_MAIN();
