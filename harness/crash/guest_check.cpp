#include "crash/guest_check.hpp"

#include "launch/process.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include <fstream>
#include <sstream>

namespace blkrig::crash {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A step's arguments (strings, integers, booleans: what a step takes) as a TOML table.
toml::table step_table(const json& args) {
    toml::table t;
    for (const auto& [k, v] : args.items()) {
        if (v.is_string()) t.insert(k, v.get<std::string>());
        else if (v.is_boolean()) t.insert(k, v.get<bool>());
        else if (v.is_number_integer()) t.insert(k, v.get<int64_t>());
    }
    return t;
}


}  // namespace

std::string first_lines(const std::string& text, size_t n) {
    size_t pos = 0;
    for (size_t i = 0; i < n && pos != std::string::npos; ++i) pos = text.find('\n', pos + (i ? 1 : 0));
    return pos == std::string::npos ? text : text.substr(0, pos);
}

std::string check_scenario_text(const scenario::Scenario& sc) {
    toml::table root;
    root.insert("scenario", toml::table{{"name", sc.name + "-crash-check"},
                                        {"description", "a crash state of " + sc.name + ": mount, read each promised file, umount"},
                                        {"needs", toml::array{"disk-from"}},
                                        {"extent_check", false},
                                        {"timeout", static_cast<int64_t>(std::min(sc.timeout_s, 300u))}});
    root.insert("disk", toml::table{{"fs", sc.disk.fs}, {"size", static_cast<int64_t>(sc.disk.size_bytes)}});
    // The scenario's own mount (its options), so the state is mounted as the workload mounted it.
    json mount = {{"op", "mount"}};
    for (const auto& st : sc.steps)
        if (st.op == "mount") {
            mount = st.args;
            mount.erase("cpu");
            break;
        }
    toml::array steps;
    steps.push_back(step_table(mount));
    for (const auto& p : sc.promises) steps.push_back(toml::table{{"op", "read"}, {"path", p.path}});
    steps.push_back(toml::table{{"op", "umount"}});
    root.insert("steps", std::move(steps));
    std::ostringstream out;
    out << "# Written by blkrig crash: the guest's check of one crash state.\n"
        << "#   blkrig run THIS.toml --disk-from STATE_DIR --no-guest-trace\n"
        << toml::toml_formatter(root) << "\n";
    return out.str();
}

const GuestRead* BootResult::read_of(const std::string& path) const {
    for (const auto& r : reads)
        if (r.path == path) return &r;
    return nullptr;
}

std::string boot_command(const BootSpec& b, const fs::path& dir) {
    // --force: the boot blkrig crash made left that folder; a second look replaces it.
    std::string cmd = fmt::format("blkrig run {} --disk-from {} --no-guest-trace --out {} --force", b.check_toml.string(), dir.string(),
                                  (dir / "boot").string());
    if (!b.kernel.empty()) cmd += " --kernel " + b.kernel;
    return cmd;
}

BootResult boot_state(const BootSpec& b, const fs::path& dir, const std::vector<std::string>& read_paths) {
    BootResult res;
    res.run_dir = dir / "boot";
    std::error_code ec;
    fs::remove_all(res.run_dir, ec);
    std::vector<std::string> argv = {b.blkrig.string(), "run", b.check_toml.string(), "--disk-from", dir.string(), "--no-guest-trace",
                                     "--out", res.run_dir.string()};
    if (!b.kernel.empty()) argv.insert(argv.end(), {"--kernel", b.kernel});
    const auto r = launch::run_tool(argv, b.timeout);
    res.exit = r.exit_code;
    // 0 and 1 both ran the steps (1: a step did not return 0, e.g. a mount
    // that failed); anything else is the rig's failure, not the state's.
    if (r.exit_code != 0 && r.exit_code != 1) {
        res.failure = fmt::format("the guest check (exit {}) did not run: {}", r.exit_code, first_lines(r.output, 4));
        return res;
    }
    std::ifstream in(res.run_dir / "results.jsonl");
    if (!in) {
        res.failure = fmt::format("the guest check left no {}", (res.run_dir / "results.jsonl").string());
        return res;
    }
    bool mounted = false;
    for (std::string line; std::getline(in, line);) {
        const auto j = json::parse(line, nullptr, false);
        if (!j.is_object() || j.value("type", "") != "step") continue;
        const std::string op = j.value("op", "");
        const int ret = j.value("ret", -1);
        std::string err = j.value("error", "");
        if (err.empty() && ret != 0) err = fmt::format("errno {}", j.value("errno", 0));
        if (op == "mount" && !mounted) {
            mounted = true;
            res.mount_ret = ret;
            res.mount_error = err;
        } else if (op == "read") {
            // Step i reads the i-th promised file (check_scenario_text's order).
            const int64_t i = j.value("index", int64_t{0}) - 1;
            if (i < 0 || i >= static_cast<int64_t>(read_paths.size())) continue;
            res.reads.push_back({read_paths[static_cast<size_t>(i)], ret, ret == 0 ? "" : err, j.value("bytes", uint64_t{0}), j.value("xxh128", "")});
        }
    }
    if (!mounted) res.failure = "the guest check ran no mount step";
    res.disk_after = res.run_dir / "disk.img";
    return res;
}

}  // namespace blkrig::crash
