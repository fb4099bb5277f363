#include "agent_core/result.hpp"

#include <nlohmann/json.hpp>

#include <cstring>

namespace blkrig::agent {

namespace {

// ordered_json keeps "type" first, which makes the lines easy to read.
using Json = nlohmann::ordered_json;

std::string line(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n"; }

}  // namespace

void StepResult::fail(std::string failed_call, int errnum) {
    ret = -1;
    err = errnum;
    error = errno_name(errnum);
    call = std::move(failed_call);
}

void StepResult::fail_text(std::string text) {
    ret = -1;
    err = 0;
    error = std::move(text);
}

std::string errno_name(int errnum) {
    const char* name = ::strerrorname_np(errnum);
    return name ? name : "errno " + std::to_string(errnum);
}

std::string encode(const Hello& h) {
    Json queue = Json::object();
    for (const auto& [key, value] : h.queue) queue[key] = value;
    Json sysfs = Json::object();
    for (const auto& [key, value] : h.sysfs) sysfs[key] = value;
    return line({{"type", "hello"},
                 {"kernel", h.kernel},
                 {"modules", h.modules},
                 {"functions_traced", h.functions_traced},
                 {"functions_missing", h.functions_missing},
                 {"filter_lines", h.filter_lines},
                 {"filter_hint", h.filter_hint},
                 {"events", h.events},
                 {"events_missing", h.events_missing},
                 {"queue", queue},
                 {"sysfs", sysfs},
                 {"cpus_online", h.cpus_online},
                 {"t_ns", h.t_ns}});
}

namespace {

Json extents_json(const std::vector<Extent>& extents) {
    Json list = Json::array();
    for (const Extent& e : extents)
        list.push_back({{"logical", e.logical}, {"physical", e.physical}, {"length", e.length}, {"flags", e.flags}});
    return list;
}

}  // namespace

std::string encode(const BeforeSteps& b) {
    Json j = {{"type", "before_steps"}};
    if (b.extent_check) {
        Json files = Json::array();
        for (const auto& [path, r] : b.extent_check->files) {
            Json f = {{"path", path}, {"ret", r.ret}, {"errno", r.err}, {"error", r.error}, {"call", r.call}};
            if (r.extents) f["extents"] = extents_json(*r.extents);
            files.push_back(std::move(f));
        }
        j["extent_check"] = {{"error", b.extent_check->error}, {"files", std::move(files)}};
    } else {
        j["extent_check"] = nullptr;
    }
    j["disk_cache"] = {{"pages", b.disk_pages},
                       {"resident_before", b.resident_before},
                       {"resident_after", b.resident_after},
                       {"buffers_kb_before", b.buffers_kb_before},
                       {"buffers_kb_after", b.buffers_kb_after},
                       {"error", b.cache_error}};
    j["rcu_expedited"] = {{"before", b.rcu_expedited_before}, {"after", b.rcu_expedited_after}};
    j["t_start_ns"] = b.t_start_ns;
    j["t_end_ns"] = b.t_end_ns;
    return line(j);
}

std::string encode(const StepResult& r) {
    Json j = {{"type", "step"}, {"index", r.index}, {"op", op_name(r.op)}, {"ret", r.ret},
              {"errno", r.err}, {"error", r.error}, {"call", r.call}};
    if (r.bytes) j["bytes"] = *r.bytes;
    if (r.xxh128) j["xxh128"] = *r.xxh128;
    if (r.sha256) j["sha256"] = *r.sha256;
    if (r.mount_options) j["mount_options"] = *r.mount_options;
    if (r.extents) j["extents"] = extents_json(*r.extents);
    j["t_start_ns"] = r.t_start_ns;
    j["t_end_ns"] = r.t_end_ns;
    j["marker_begin"] = r.marker_begin;
    j["marker_end"] = r.marker_end;
    if (!r.marker_error.empty()) j["marker_error"] = r.marker_error;
    return line(j);
}

std::optional<StepResult> decode_step(std::string_view line) {
    if (line.empty() || line.back() != '\n') return std::nullopt;
    try {
        const Json j = Json::parse(line);
        if (j.at("type") != "step") return std::nullopt;
        const auto op = op_from_name(j.at("op").get<std::string>());
        if (!op) return std::nullopt;
        StepResult r;
        r.index = j.at("index").get<size_t>();
        r.op = *op;
        r.ret = j.at("ret").get<int>();
        r.err = j.at("errno").get<int>();
        r.error = j.at("error").get<std::string>();
        r.call = j.at("call").get<std::string>();
        if (j.contains("bytes")) r.bytes = j["bytes"].get<uint64_t>();
        if (j.contains("xxh128")) r.xxh128 = j["xxh128"].get<std::string>();
        if (j.contains("sha256")) r.sha256 = j["sha256"].get<std::string>();
        if (j.contains("mount_options")) r.mount_options = j["mount_options"].get<std::string>();
        if (j.contains("extents")) {
            r.extents.emplace();
            for (const Json& e : j["extents"])
                r.extents->push_back({e.at("logical").get<uint64_t>(), e.at("physical").get<uint64_t>(),
                                      e.at("length").get<uint64_t>(), e.at("flags").get<uint32_t>()});
        }
        r.t_start_ns = j.at("t_start_ns").get<int64_t>();
        r.t_end_ns = j.at("t_end_ns").get<int64_t>();
        r.marker_begin = j.at("marker_begin").get<int64_t>();
        r.marker_end = j.at("marker_end").get<int64_t>();
        if (j.contains("marker_error")) r.marker_error = j["marker_error"].get<std::string>();
        return r;
    } catch (const Json::exception&) {
        return std::nullopt;
    }
}

std::string encode(const ErrorRecord& e) { return line({{"type", "error"}, {"what", e.what}}); }

std::string encode(const Done& d) { return line({{"type", "done"}, {"steps", d.steps}}); }

}  // namespace blkrig::agent
