// Fuzzes the scenario reader: any text is a Scenario or a ScenarioError with
// a position; nothing else may escape.
#include "scenario/scenario.hpp"

#include <string_view>

using namespace blkrig::scenario;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        (void)parse_scenario(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
    } catch (const ScenarioError&) {
    }
    return 0;
}
