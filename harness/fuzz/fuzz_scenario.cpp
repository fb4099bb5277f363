// Fuzzes the scenario reader: any text is a Scenario or a ScenarioError with
// a position; nothing else may escape. A scenario's [[expect]] tables go on
// to the expectation parser and are checked against the scenario, as
// `blkrig run` does before it starts anything (ExpectError or nothing).
#include "checks/expect.hpp"
#include "scenario/scenario.hpp"

#include <string_view>

using namespace blkrig;
using namespace blkrig::scenario;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Scenario sc;
    try {
        sc = parse_scenario(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
    } catch (const ScenarioError&) {
        return 0;
    }
    try {
        for (const auto& e : checks::parse_expectations(sc.expects, "fuzz.toml")) checks::validate(e, sc);
    } catch (const checks::ExpectError&) {
    }
    return 0;
}
