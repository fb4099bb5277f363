// Expectations as data: an [[expect]] table (in a scenario, or a file of its
// own) names what to look at (a step, a file, an op) and one or more
// properties the device's requests must have. Parsing is pure and checks
// every key; checking runs the model's queries. docs/harness.md lists the
// vocabulary.
//
//   [[expect]]
//   step = 2
//   file = "/mnt/frag.bin"
//   split_at_extents = true
//   max_request_bytes = 131072
#pragma once

#include "model/run_model.hpp"
#include "scenario/scenario.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace blkrig::checks {

// A bad expectation: which one (file:line, or "expectation N"), which key, what is wrong.
struct ExpectError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

struct Property {
    std::string key;
    nlohmann::json value;
    std::string where;  // "file.toml:12" or "expectation 3"
};

struct Expectation {
    std::string where;  // "file.toml:10" (the table's line) or "expectation 3"
    std::string name;   // optional label for reports
    std::optional<int> step;  // the scenario's step index
    std::optional<std::string> file;  // "/mnt/f1.bin"
    std::string step_where, file_where;  // where step and file were given, for errors
    std::optional<std::string> op;    // default: every data op (read, write, discard, write_zeroes)
    std::vector<Property> properties;
};

// One table. where names it ("x.toml:10"); key_lines gives each key's line
// for messages (empty: no lines). Throws ExpectError for an unknown key, a
// value of the wrong type, or a table without a property.
Expectation parse_expectation(const nlohmann::json& table, const std::string& where, const std::string& file = "",
                              const std::map<std::string, int>& key_lines = {});
std::vector<Expectation> parse_expectations(const std::vector<scenario::ExpectTable>& tables, const std::string& file);
// A file of [[expect]] tables; ExpectError for a bad file or table.
std::vector<Expectation> load_expectations(const std::string& path);

// Before a run: steps and files the scenario does not have are errors.
void validate(const Expectation& e, const scenario::Scenario& sc);

struct CheckResult {
    std::string where;     // the expectation
    std::string property;  // the key checked, e.g. "max_request_bytes"
    bool ok = false;
    std::string message;   // what held, or what did not and the first offender
    std::optional<uint64_t> offender_seq;
    uint64_t offenders = 0;
};

// One result per property. Throws ExpectError when the run has no such
// step or file (the expectation, not the run, is wrong).
std::vector<CheckResult> check(const model::Run& run, const Expectation& e);

// Every expectation, in order.
std::vector<CheckResult> check_all(const model::Run& run, const std::vector<Expectation>& es);

nlohmann::json to_json(const CheckResult& r);
// "PASS file.toml:12 split_at_extents: step 2 read /mnt/f.bin: ..."
std::string to_text(const CheckResult& r);

// The vocabulary, for messages and docs: property keys and selectors.
const std::vector<std::string>& property_keys();

}  // namespace blkrig::checks
