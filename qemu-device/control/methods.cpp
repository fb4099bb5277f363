#include "control/methods.hpp"

#include "common/log.hpp"

namespace blkrig::control {

using nlohmann::json;

MethodTable device_methods(faults::Engine& engine, blk::BlkDevice& dev, trace::Writer* trace) {
    MethodTable m;
    m["fault.add"] = [&engine, &dev](const json& p) -> json {
        if (!p.contains("rule") || !p["rule"].is_string()) throw InvalidParams("fault.add needs {\"rule\": \"RULE TEXT\"}");
        const std::string text = p["rule"];
        auto parsed = faults::parse_rule(text);
        if (auto* e = std::get_if<faults::RuleError>(&parsed))
            throw InvalidParams(fmt::format("rule column {}: {} (in '{}')", e->column, e->message, text));
        const auto& g = dev.geometry();
        if (auto why = faults::never_fires(std::get<faults::Rule>(parsed), g.capacity_sectors, g.num_queues))
            throw InvalidParams(fmt::format("{} (in '{}')", *why, text));
        const uint32_t id = engine.add(std::get<faults::Rule>(parsed));
        log(LogLevel::info, "control: fault rule {} added: {}", id, text);
        return {{"id", id}, {"rule", faults::to_text(std::get<faults::Rule>(parsed))}};
    };
    m["fault.remove"] = [&engine](const json& p) -> json {
        if (!p.contains("id") || !p["id"].is_number_unsigned()) throw InvalidParams("fault.remove needs {\"id\": N}");
        // Rule ids are 32-bit: a larger id names no rule (not its low 32 bits).
        const uint64_t id = p["id"].get<uint64_t>();
        if (id > UINT32_MAX || !engine.remove(static_cast<uint32_t>(id))) throw InvalidParams(fmt::format("no fault rule with id {}", id));
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
    m["stats"] = [&dev](const json&) -> json {
        json out = dev.stats_json();
        out["held"] = dev.deferrals()->held().size();
        out["powered_off"] = dev.powered_off();
        return out;
    };
    m["request.held"] = [&dev](const json&) -> json {
        json out = json::array();
        for (const auto& h : dev.deferrals()->held())
            out.push_back({{"seq", h.seq}, {"queue", h.queue}, {"rule", h.rule}, {"op", trace::op_label(h.type)}, {"sector", h.sector},
                           {"held_ms", h.held_ns / 1000000}});
        return out;
    };
    // Held requests complete: one (seq), those of a rule (rule), or all.
    m["request.release"] = [&dev, trace](const json& p) -> json {
        std::optional<uint64_t> seq;
        std::optional<uint32_t> rule;
        if (p.contains("seq")) {
            if (!p["seq"].is_number_unsigned()) throw InvalidParams("request.release: seq must be an unsigned integer");
            seq = p["seq"].get<uint64_t>();
        }
        if (p.contains("rule")) {
            if (!p["rule"].is_number_unsigned() || p["rule"].get<uint64_t>() > UINT32_MAX)
                throw InvalidParams("request.release: rule must be a rule id (an unsigned 32-bit integer)");
            rule = p["rule"].get<uint32_t>();
        }
        for (const auto& [k, v] : p.items())
            if (k != "seq" && k != "rule") throw InvalidParams(fmt::format("request.release: unknown parameter '{}' (seq, rule)", k));
        const auto released = dev.deferrals()->release(seq, rule);
        if (seq && released.empty()) throw InvalidParams(fmt::format("no held request with seq {}", *seq));
        if (trace && !released.empty())
            trace->event({monotonic_ns(), trace::EventCode::released, 0, 0, fmt::format("{} held request(s) released", released.size())});
        log(LogLevel::info, "control: released {} held request(s)", released.size());
        return {{"released", released}};
    };
    m["power.cut"] = [&dev](const json& p) -> json {
        if (!dev.has_write_log()) throw InvalidParams("power.cut needs the crash model: start the device with --crash-model");
        if (dev.powered_off()) throw InvalidParams("the power is already off (power.on turns it back on)");
        const std::string mode = p.value("mode", "drop_all");
        store::CutMode m;
        if (mode == "drop_all") m = store::CutMode::drop_all;
        else if (mode == "drop_random") m = store::CutMode::drop_random;
        else if (mode == "keep_all") m = store::CutMode::keep_all;
        else throw InvalidParams(fmt::format("power.cut: mode must be drop_all, drop_random or keep_all, got '{}'", mode));
        if (p.contains("seed") && !p["seed"].is_number_unsigned()) throw InvalidParams("power.cut: seed must be an unsigned integer");
        if (p.contains("share") && !p["share"].is_number()) throw InvalidParams("power.cut: share must be a number from 0 to 1");
        const double share = p.value("share", 0.5);
        if (!(share >= 0.0 && share <= 1.0)) throw InvalidParams("power.cut: share must be from 0 to 1");
        return dev.power_cut(m, p.value("seed", uint64_t{0}), share);
    };
    m["power.on"] = [&dev](const json&) -> json {
        if (!dev.powered_off()) throw InvalidParams("the power is on");
        dev.power_on();
        return json::object();
    };
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
