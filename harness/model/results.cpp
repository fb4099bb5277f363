#include "model/results.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <limits>
#include <optional>

namespace blkrig::model {

using nlohmann::json;

namespace {

enum class Kind { string, integer, unsigned_integer, boolean, strings, unsigned_integers, string_map, object, object_or_null, array };

struct Field {
    const char* name;
    Kind kind;
};

const char* kind_text(Kind k) {
    switch (k) {
    case Kind::string: return "a string";
    case Kind::integer: return "an integer";
    case Kind::unsigned_integer: return "an unsigned integer";
    case Kind::boolean: return "true or false";
    case Kind::strings: return "a list of strings";
    case Kind::unsigned_integers: return "a list of unsigned integers";
    case Kind::string_map: return "an object of strings";
    case Kind::object: return "an object";
    case Kind::object_or_null: return "an object or null";
    case Kind::array: return "a list";
    }
    return "?";
}

// Integers only: a float would be cast to an integer type by the readers,
// which is undefined for values out of range.
bool is_kind(const json& v, Kind k) {
    switch (k) {
    case Kind::string: return v.is_string();
    case Kind::integer:
        return v.is_number_integer() &&
               (!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
    case Kind::unsigned_integer: return v.is_number_unsigned();
    case Kind::boolean: return v.is_boolean();
    case Kind::strings:
        if (!v.is_array()) return false;
        for (const auto& e : v)
            if (!e.is_string()) return false;
        return true;
    case Kind::unsigned_integers:
        if (!v.is_array()) return false;
        for (const auto& e : v)
            if (!e.is_number_unsigned()) return false;
        return true;
    case Kind::string_map:
        if (!v.is_object()) return false;
        for (const auto& [key, e] : v.items())
            if (!e.is_string()) return false;
        return true;
    case Kind::object: return v.is_object();
    case Kind::object_or_null: return v.is_object() || v.is_null();
    case Kind::array: return v.is_array();
    }
    return false;
}

// Fields are optional (the protocol leaves some out by op); a field that is
// there has the type the table says.
std::optional<std::string> check_fields(const json& j, std::initializer_list<Field> fields, std::string_view where) {
    for (const auto& f : fields) {
        const auto it = j.find(f.name);
        if (it == j.end() || is_kind(*it, f.kind)) continue;
        return fmt::format("{}: \"{}\" must be {}, got {}", where, f.name, kind_text(f.kind),
                           it->dump(-1, ' ', false, json::error_handler_t::replace).substr(0, 60));
    }
    return std::nullopt;
}

// The fields of a step record, also those of an extent check's file result.
const std::initializer_list<Field> kStepFields = {
    {"index", Kind::unsigned_integer}, {"op", Kind::string},          {"ret", Kind::integer},
    {"errno", Kind::integer},          {"error", Kind::string},       {"call", Kind::string},
    {"bytes", Kind::unsigned_integer}, {"sha256", Kind::string},      {"xxh128", Kind::string},
    {"extents", Kind::array},          {"mount_options", Kind::string}, {"t_start_ns", Kind::integer},
    {"t_end_ns", Kind::integer},       {"marker_begin", Kind::integer}, {"marker_end", Kind::integer},
    {"marker_error", Kind::string},    {"path", Kind::string},
};

const std::initializer_list<Field> kExtentFields = {
    {"logical", Kind::unsigned_integer}, {"physical", Kind::unsigned_integer}, {"length", Kind::unsigned_integer}, {"flags", Kind::unsigned_integer}};

std::optional<std::string> check_step(const json& j, std::string_view where) {
    if (auto p = check_fields(j, kStepFields, where)) return p;
    if (const auto ex = j.find("extents"); ex != j.end())
        for (size_t i = 0; i < ex->size(); ++i) {
            const std::string w = fmt::format("{} extents[{}]", where, i);
            if (!(*ex)[i].is_object()) return w + ": not an object";
            if (auto p = check_fields((*ex)[i], kExtentFields, w)) return p;
        }
    return std::nullopt;
}

std::optional<std::string> check_hello(const json& j) {
    return check_fields(j,
                        {{"kernel", Kind::string}, {"modules", Kind::strings}, {"functions_traced", Kind::strings},
                         {"functions_missing", Kind::strings}, {"filter_lines", Kind::unsigned_integers}, {"filter_hint", Kind::string},
                         {"events", Kind::strings}, {"events_missing", Kind::strings},
                         {"queue", Kind::string_map}, {"sysfs", Kind::string_map}, {"cpus_online", Kind::string}, {"t_ns", Kind::integer}},
                        "hello record");
}

std::optional<std::string> check_before_steps(const json& j) {
    if (auto p = check_fields(j, {{"extent_check", Kind::object_or_null}, {"disk_cache", Kind::object}, {"rcu_expedited", Kind::object},
                                  {"t_start_ns", Kind::integer}, {"t_end_ns", Kind::integer}},
                              "before_steps record"))
        return p;
    if (const auto c = j.find("disk_cache"); c != j.end())
        if (auto p = check_fields(*c,
                                  {{"pages", Kind::unsigned_integer}, {"resident_before", Kind::unsigned_integer},
                                   {"resident_after", Kind::unsigned_integer}, {"buffers_kb_before", Kind::integer},
                                   {"buffers_kb_after", Kind::integer}, {"error", Kind::string}},
                                  "before_steps disk_cache"))
            return p;
    const auto x = j.find("extent_check");
    if (x == j.end() || x->is_null()) return std::nullopt;
    if (auto p = check_fields(*x, {{"error", Kind::string}, {"files", Kind::array}}, "before_steps extent_check")) return p;
    if (const auto files = x->find("files"); files != x->end())
        for (size_t i = 0; i < files->size(); ++i) {
            const std::string w = fmt::format("before_steps extent_check files[{}]", i);
            if (!(*files)[i].is_object()) return w + ": not an object";
            if (auto p = check_step((*files)[i], w)) return p;
        }
    return std::nullopt;
}

}  // namespace

AgentResults parse_results(std::string_view text) {
    AgentResults out;
    size_t n = 0;
    while (!text.empty()) {
        const size_t nl = text.find('\n');
        const std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        ++n;
        if (line.empty()) continue;
        // The guest may die mid-line; the lines after it are still worth reading.
        auto problem = [&](const std::string& what) { out.problems.push_back(fmt::format("line {}: {}", n, what)); };
        json j = json::parse(line, nullptr, false);
        if (!j.is_object()) {
            problem(fmt::format("not a JSON object: {}", json(std::string(line.substr(0, 120))).dump(-1, ' ', false, json::error_handler_t::replace)));
            continue;
        }
        const auto type = j.find("type");
        if (type == j.end() || !type->is_string()) {
            problem("a record without a \"type\" string");
            continue;
        }
        const std::string& t = type->get_ref<const std::string&>();
        std::optional<std::string> bad;
        if (t == "hello") {
            if (!(bad = check_hello(j))) out.hello = std::move(j);
        } else if (t == "before_steps") {
            if (!(bad = check_before_steps(j))) out.before_steps = std::move(j);
        } else if (t == "step") {
            const auto idx = j.find("index");
            if (idx == j.end() || !idx->is_number_unsigned()) bad = "step record: \"index\" must be an unsigned integer";
            else if (!(bad = check_step(j, "step record"))) out.steps.push_back({n, idx->get<uint64_t>(), std::move(j)});
        } else if (t == "error") {
            if (!(bad = check_fields(j, {{"what", Kind::string}}, "error record"))) out.errors.push_back(j.value("what", std::string("?")));
        } else if (t == "done") {
            if (!(bad = check_fields(j, {{"steps", Kind::unsigned_integer}}, "done record"))) out.done = true;
        } else {
            bad = fmt::format("unknown record type {}", type->dump(-1, ' ', false, json::error_handler_t::replace).substr(0, 60));
        }
        if (bad) problem(*bad);
    }
    return out;
}

}  // namespace blkrig::model
