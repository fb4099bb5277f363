// Fuzzes expectation TOML: a file of [[expect]] tables is parsed, each table
// checked against a scenario, then run against a real run folder's model
// (written once by the checks tests' RunFolder). Any text is expectations or
// a ScenarioError/ExpectError; nothing else may escape, and every result
// names one of its table's properties and where that was written.
#include "checks/expect.hpp"
#include "model/run_model.hpp"
#include "run_folder.hpp"
#include "scenario/scenario.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string_view>

using namespace blkrig;

namespace {

struct Fixture {
    test::RunFolder folder;
    scenario::Scenario sc;
    std::unique_ptr<model::Run> run;

    // /mnt/f.bin in two extents; step 0 reads it, step 1 writes and flushes.
    Fixture() {
        folder.add_file("/f.bin", 65536, {{0, 1000, 64}, {32768, 2000, 64}});
        folder.begin_step("read", "/mnt/f.bin");
        folder.read(1000, 32);
        folder.read(1032, 32);
        folder.read(2000, 64);
        folder.end_step(0, 65536);
        folder.begin_step("write", "/mnt/f.bin");
        folder.write(1000, 16);
        folder.flush();
        folder.end_step();
        folder.write();
        run = std::make_unique<model::Run>(model::load_run(folder.path()));
        sc = scenario::parse_scenario(R"(
[disk]
fs = "ext4"
size = "64M"

[[disk.files]]
path = "/f.bin"
size = "64K"

[[steps]]
op = "read"
path = "/mnt/f.bin"

[[steps]]
op = "write"
path = "/mnt/f.bin"
length = "8K"
)",
                                      "fuzz.toml");
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Fixture fixture;  // its folder is removed at exit
    Fixture* fx = &fixture;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    std::vector<checks::Expectation> es;
    try {
        es = checks::parse_expectations(scenario::parse_expect_file(text, "fuzz.toml"), "fuzz.toml");
    } catch (const scenario::ScenarioError&) {
        return 0;
    } catch (const checks::ExpectError&) {
        return 0;
    }
    for (const auto& e : es) {
        if (e.properties.empty()) std::abort();  // a table without a property is an error
        try {
            checks::validate(e, fx->sc);
            for (const auto& r : checks::check(*fx->run, e)) {
                // Each result names one of the table's properties, where it was written.
                const auto p = std::find_if(e.properties.begin(), e.properties.end(), [&](const auto& q) { return q.key == r.property; });
                if (p == e.properties.end() || r.where != p->where) std::abort();
                (void)checks::to_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
                (void)checks::to_text(r);
            }
        } catch (const checks::ExpectError&) {
        }
    }
    return 0;
}
