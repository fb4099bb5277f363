#include "checks/steps.hpp"

#include <fmt/format.h>

namespace blkrig::checks {

namespace {
std::string str(const nlohmann::json& j, const char* key) {
    if (!j.contains(key) || j[key].is_null()) return "";
    return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}
}  // namespace

std::vector<StepVerdict> check_steps(const scenario::Scenario& sc, const std::map<size_t, nlohmann::json>& results,
                                     const std::map<std::string, std::string>& file_xxh128) {
    std::vector<StepVerdict> out;
    for (size_t i = 0; i < sc.steps.size(); ++i) {
        const auto& st = sc.steps[i];
        StepVerdict v;
        v.index = i;
        v.op = st.op;
        v.path = st.args.value("path", std::string());
        v.line = st.line;
        auto it = results.find(i);
        v.ran = it != results.end();
        if (!v.ran) {
            out.push_back(std::move(v));
            continue;
        }
        const auto& r = it->second;
        v.result = r;
        const auto& e = st.expect;
        // A step without expectations must at least not fail.
        const int64_t ret = r.value("ret", int64_t{-1});
        if (!e.ret && !e.error) v.checks.push_back({"ret", "0", std::to_string(ret), ret == 0});
        if (e.ret) v.checks.push_back({"ret", std::to_string(*e.ret), std::to_string(ret), ret == *e.ret});
        if (e.error) {
            const std::string got = str(r, "error");
            v.checks.push_back({"errno", *e.error, got, got == *e.error});
        }
        if (e.bytes) {
            const uint64_t got = r.value("bytes", uint64_t{0});
            v.checks.push_back({"bytes", std::to_string(*e.bytes), std::to_string(got), got == *e.bytes});
        }
        if (e.sha256 == "file") {
            auto f = file_xxh128.find(st.args.value("path", ""));
            const std::string want = f == file_xxh128.end() ? "(unknown file)" : f->second;
            const std::string got = str(r, "xxh128");
            v.checks.push_back({"content", want, got, got == want});
        } else if (e.sha256) {
            const std::string got = str(r, "sha256");
            v.checks.push_back({"sha256", *e.sha256, got, got == *e.sha256});
        }
        v.ok = true;
        for (const auto& c : v.checks) v.ok = v.ok && c.ok;
        out.push_back(std::move(v));
    }
    return out;
}

std::string describe_failure(const StepVerdict& v) {
    const std::string where = fmt::format("step {} ({}{}{}, line {})", v.index, v.op, v.path.empty() ? "" : " ", v.path, v.line);
    if (!v.ran) return where + ": did not run (the guest stopped before it)";
    std::string out;
    for (const auto& c : v.checks)
        if (!c.ok)
            out += fmt::format("{}{}: {} expected {}, got {}", out.empty() ? "" : "; ", where, c.what, c.expected,
                               c.got.empty() ? "nothing" : c.got);
    const std::string err = v.result.value("error", std::string());
    if (!err.empty() && out.find(err) == std::string::npos) out += fmt::format(" (error: {})", err);
    return out;
}

nlohmann::json to_json(const StepVerdict& v) {
    nlohmann::json checks = nlohmann::json::array();
    for (const auto& c : v.checks) checks.push_back({{"what", c.what}, {"expected", c.expected}, {"got", c.got}, {"ok", c.ok}});
    return {{"index", v.index}, {"op", v.op}, {"line", v.line}, {"ran", v.ran}, {"ok", v.ok}, {"checks", checks}, {"result", v.result}};
}

}  // namespace blkrig::checks
