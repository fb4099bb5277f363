#include "control/methods.hpp"

#include "common/log.hpp"

namespace blkrig::control {

using nlohmann::json;

MethodTable device_methods(faults::Engine& engine, blk::BlkDevice& dev, trace::Writer* trace) {
    MethodTable m;
    m["fault.add"] = [&engine](const json& p) -> json {
        if (!p.contains("rule") || !p["rule"].is_string()) throw InvalidParams("fault.add needs {\"rule\": \"RULE TEXT\"}");
        const std::string text = p["rule"];
        auto parsed = faults::parse_rule(text);
        if (auto* e = std::get_if<faults::RuleError>(&parsed))
            throw InvalidParams(fmt::format("rule column {}: {} (in '{}')", e->column, e->message, text));
        const uint32_t id = engine.add(std::get<faults::Rule>(parsed));
        log(LogLevel::info, "control: fault rule {} added: {}", id, text);
        return {{"id", id}, {"rule", faults::to_text(std::get<faults::Rule>(parsed))}};
    };
    m["fault.remove"] = [&engine](const json& p) -> json {
        if (!p.contains("id") || !p["id"].is_number_unsigned()) throw InvalidParams("fault.remove needs {\"id\": N}");
        const bool removed = engine.remove(p["id"].get<uint32_t>());
        if (!removed) throw InvalidParams(fmt::format("no fault rule with id {}", p["id"].get<uint32_t>()));
        return {{"removed", true}};
    };
    m["fault.list"] = [&engine](const json&) -> json {
        json out = json::array();
        for (const auto& r : engine.list()) out.push_back({{"id", r.id}, {"rule", r.text}, {"matched", r.matched}, {"fired", r.fired}});
        return out;
    };
    m["fault.clear"] = [&engine](const json&) -> json {
        engine.clear();
        return json::object();
    };
    m["trace.mark"] = [trace](const json& p) -> json {
        const std::string text = p.value("text", "");
        if (!trace) throw InvalidParams("the device writes no trace (start it with --trace FILE)");
        trace->event({monotonic_ns(), trace::EventCode::mark, 0, 0, text});
        return json::object();
    };
    m["stats"] = [&dev](const json&) -> json { return dev.stats_json(); };
    // The live rule set as the calls that would rebuild it.
    m["save_config"] = [&engine](const json&) -> json {
        json calls = json::array();
        for (const auto& r : engine.list())
            calls.push_back({{"jsonrpc", "2.0"}, {"method", "fault.add"}, {"params", {{"rule", r.text}}}});
        return {{"calls", calls}};
    };
    return m;
}

}  // namespace blkrig::control
