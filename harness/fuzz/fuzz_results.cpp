// Fuzzes the guest agent's results as the host reads them: results.jsonl
// through model::parse_results, then every reader of the records (the step
// checks, the knob checks, the model's step fields) as `blkrig run` and the
// model use them; and each line through the agent's own decode_step, whose
// records must encode back to a line that decodes to the same record. The
// guest may write anything; nothing may crash or throw.
#include "agent_core/result.hpp"
#include "checks/steps.hpp"
#include "model/results.hpp"
#include "run/knobs.hpp"
#include "scenario/scenario.hpp"

#include <cstdlib>
#include <map>
#include <string_view>

using namespace blkrig;
using nlohmann::json;

namespace {

// A scenario with a mount, each data op and knobs to confirm, so every
// reader has something to compare the records with.
const scenario::Scenario& fixed_scenario() {
    static const scenario::Scenario sc = scenario::parse_scenario(R"(
[disk]
fs = "ext4"
size = "64M"

[[disk.files]]
path = "/f1.bin"
size = "1M"

[guest]
scheduler = "none"
read_ahead_kb = 128
mount_options = "noatime"

[[steps]]
op = "mount"

[[steps]]
op = "read"
path = "/mnt/f1.bin"
expect = { ret = 0, bytes = "1M", sha256 = "file" }

[[steps]]
op = "write"
path = "/mnt/f2.bin"
length = "64K"

[[steps]]
op = "fsync"
path = "/mnt/f2.bin"
)",
                                                                  "fuzz.toml");
    return sc;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const auto& sc = fixed_scenario();
    auto res = model::parse_results(text);

    std::map<size_t, json> results;
    for (const auto& s : res.steps) {
        // The model's reads (run_model.cpp load_results).
        const json& j = s.record;
        (void)j.value("ret", int64_t{-1});
        (void)j.value("errno", int64_t{0});
        (void)j.value("error", std::string());
        (void)j.value("call", std::string());
        (void)j.value("bytes", uint64_t{0});
        (void)j.value("marker_begin", int64_t{-1});
        (void)j.value("marker_end", int64_t{-1});
        if (s.index < sc.steps.size()) results[s.index] = s.record;
    }
    (void)checks::check_steps(sc, results, {{"/mnt/f1.bin", "00"}});
    json mount;
    if (auto it = results.find(0); it != results.end()) mount = it->second;
    (void)run::to_json(run::check_knobs(sc, res.hello, mount), res.hello).dump(-1, ' ', false, json::error_handler_t::replace);

    // The agent's PID 1 reads its step children's lines with decode_step.
    size_t start = 0;
    while (start < text.size()) {
        const size_t nl = text.find('\n', start);
        const std::string_view line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start + 1);
        start = nl == std::string_view::npos ? text.size() : nl + 1;
        const auto r = agent::decode_step(line);
        if (!r) continue;
        const std::string again = agent::encode(*r);
        const auto r2 = agent::decode_step(again);
        if (!r2 || agent::encode(*r2) != again) std::abort();
    }
    return 0;
}
