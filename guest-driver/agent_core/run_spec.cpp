#include "agent_core/run_spec.hpp"
#include "common/markers.hpp"

#include <sched.h>
#include <sys/mount.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <limits>
#include <set>

namespace blkrig::agent {

namespace {

// ordered_json keeps the queue knobs in the order the host wrote them.
using Json = nlohmann::ordered_json;

constexpr int64_t kMaxBs = 64 << 20;

struct OpInfo {
    Op op;
    const char* name;
    std::vector<std::string_view> fields;  // allowed besides "op"
};

const std::array<OpInfo, 15>& ops() {
    static const std::array<OpInfo, 15> table = {{
        {Op::mount, "mount", {}},
        {Op::umount, "umount", {}},
        {Op::read, "read", {"path", "fd", "offset", "length", "bs", "direct", "sha256"}},
        {Op::write, "write", {"path", "fd", "offset", "length", "bs", "pattern", "seed", "direct", "append", "create", "sha256"}},
        {Op::fsync, "fsync", {"path", "fd"}},
        {Op::fdatasync, "fdatasync", {"path", "fd"}},
        {Op::sync, "sync", {}},
        {Op::drop_caches, "drop_caches", {"value"}},
        {Op::truncate, "truncate", {"path", "size"}},
        {Op::mmap_write, "mmap_write", {"path", "offset", "length", "pattern", "seed", "sha256"}},
        {Op::fiemap, "fiemap", {"path"}},
        {Op::sleep, "sleep", {"ms"}},
        {Op::open, "open", {"path", "fd", "access", "create", "direct", "append"}},
        {Op::close, "close", {"fd"}},
        {Op::rename, "rename", {"path", "to"}},
    }};
    return table;
}

const OpInfo& info(Op op) {
    for (const auto& i : ops())
        if (i.op == op) return i;
    throw std::logic_error("op missing from the table");
}

const char* type_name(const Json& v) {
    if (v.is_boolean()) return "a boolean";
    if (v.is_number_integer()) return "an integer";
    if (v.is_number()) return "a fraction";
    return v.type_name();
}

bool is_name(std::string_view s, std::string_view extra = "") {
    return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
               extra.find(c) != std::string_view::npos;
    });
}

// One JSON object being read: names fields for errors and notices the ones
// nobody asked for (a misspelt field would otherwise be silently ignored).
class Object {
public:
    Object(const Json& j, std::string where) : j_(j), where_(std::move(where)) {
        if (!j_.is_object()) throw SpecError(where_, std::string("expected an object, got ") + type_name(j_));
    }

    std::string field(std::string_view key) const {
        return where_.empty() ? std::string(key) : where_ + "." + std::string(key);
    }
    [[noreturn]] void fail(std::string_view key, const std::string& problem) const { throw SpecError(field(key), problem); }

    bool has(std::string_view key) const { return j_.contains(key); }

    const Json* get(std::string_view key) const {
        const auto it = j_.find(key);
        return it == j_.end() ? nullptr : &*it;
    }
    const Json& need(std::string_view key) const {
        const Json* v = get(key);
        if (v == nullptr) fail(key, "missing (required)");
        return *v;
    }

    std::string string(std::string_view key, std::optional<std::string> dflt) const {
        const Json* v = dflt ? get(key) : &need(key);
        if (v == nullptr) return *dflt;
        if (!v->is_string()) fail(key, std::string("expected a string, got ") + type_name(*v));
        return v->get<std::string>();
    }

    std::string path(std::string_view key) const {
        std::string p = string(key, std::nullopt);
        if (p.empty() || p[0] != '/') fail(key, "must be an absolute path, got '" + p + "'");
        return p;
    }

    int64_t integer(std::string_view key, std::optional<int64_t> dflt, int64_t min, int64_t max) const {
        const Json* v = dflt ? get(key) : &need(key);
        if (v == nullptr) return *dflt;
        if (!v->is_number_integer()) fail(key, std::string("expected an integer, got ") + type_name(*v));
        // Non-negative numbers arrive as unsigned and may exceed int64_t.
        const bool in_range = v->is_number_unsigned()
                                  ? v->get<uint64_t>() <= static_cast<uint64_t>(max) &&
                                        (min <= 0 || v->get<uint64_t>() >= static_cast<uint64_t>(min))
                                  : v->get<int64_t>() >= min && v->get<int64_t>() <= max;
        if (!in_range)
            fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + v->dump());
        const auto n = v->get<int64_t>();
        return n;
    }

    uint64_t unsigned_integer(std::string_view key, uint64_t dflt) const {
        const Json* v = get(key);
        if (v == nullptr) return dflt;
        if (!v->is_number_integer()) fail(key, std::string("expected an integer, got ") + type_name(*v));
        if (!v->is_number_unsigned() && v->get<int64_t>() < 0) fail(key, "must not be negative, got " + v->dump());
        return v->get<uint64_t>();
    }

    bool boolean(std::string_view key, bool dflt) const {
        const Json* v = get(key);
        if (v == nullptr) return dflt;
        if (!v->is_boolean()) fail(key, std::string("expected true or false, got ") + type_name(*v));
        return v->get<bool>();
    }

    std::vector<std::string> strings(std::string_view key) const {
        const Json* v = get(key);
        if (v == nullptr) return {};
        if (!v->is_array()) fail(key, std::string("expected a list of strings, got ") + type_name(*v));
        std::vector<std::string> out;
        for (size_t i = 0; i < v->size(); ++i) {
            const Json& e = (*v)[i];
            if (!e.is_string())
                throw SpecError(field(key) + "[" + std::to_string(i) + "]",
                                std::string("expected a string, got ") + type_name(e));
            out.push_back(e.get<std::string>());
        }
        return out;
    }

    void only(const std::vector<std::string_view>& allowed, std::string_view context) const {
        for (const auto& [key, value] : j_.items()) {
            if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
                fail(key, "unknown field" + std::string(context.empty() ? "" : " for ") + std::string(context));
        }
    }

private:
    const Json& j_;
    std::string where_;
};

pattern::Kind parse_pattern(const Object& o) {
    const std::string p = o.string("pattern", "random");
    if (p == "random") return pattern::Kind::random;
    if (p == "zero") return pattern::Kind::zero;
    o.fail("pattern", "must be \"random\" or \"zero\", got '" + p + "'");
}

Access parse_access(const Object& o) {
    const std::string a = o.string("access", "r");
    if (a == "r") return Access::read;
    if (a == "w") return Access::write;
    if (a == "rw") return Access::read_write;
    o.fail("access", "must be \"r\", \"w\" or \"rw\", got '" + a + "'");
}

Op parse_op(const Object& o) {
    const std::string name = o.string("op", std::nullopt);
    std::string known;
    for (const auto& i : ops()) {
        if (name == i.name) return i.op;
        known += known.empty() ? "" : ", ";
        known += i.name;
    }
    o.fail("op", "unknown op '" + name + "' (known: " + known + ")");
}

// The file a step works on: a path, or for some ops a named descriptor.
void parse_target(const Object& o, Step& s) {
    const bool may_use_fd = s.op == Op::read || s.op == Op::write || s.op == Op::fsync || s.op == Op::fdatasync;
    if (may_use_fd && o.has("fd")) {
        if (o.has("path")) o.fail("fd", "give path or fd, not both");
        s.fd = o.string("fd", std::nullopt);
        // These are set when the descriptor is opened.
        for (const char* key : {"direct", "append", "create"})
            if (o.has(key)) o.fail(key, "not allowed with fd (set it on the open step)");
        return;
    }
    s.path = o.path("path");
}

Step parse_step(const Json& j, size_t index) {
    const Object o(j, "steps[" + std::to_string(index) + "]");
    Step s;
    s.op = parse_op(o);
    std::vector<std::string_view> allowed = info(s.op).fields;
    allowed.insert(allowed.end(), {"op", "cpu"});
    o.only(allowed, std::string("op ") + op_name(s.op));
    if (o.has("cpu")) s.cpu = static_cast<int>(o.integer("cpu", std::nullopt, 0, CPU_SETSIZE - 1));

    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    switch (s.op) {
    case Op::mount:
    case Op::umount:
    case Op::sync:
        break;
    case Op::read:
        parse_target(o, s);
        s.offset = o.integer("offset", 0, 0, kMax);
        s.length = o.integer("length", -1, -1, kMax);
        s.bs = o.integer("bs", 4096, 1, kMaxBs);
        s.direct = o.boolean("direct", false);
        break;
    case Op::write:
        parse_target(o, s);
        s.offset = o.integer("offset", 0, 0, kMax);
        s.length = o.integer("length", std::nullopt, 0, kMax);
        s.bs = o.integer("bs", 4096, 1, kMaxBs);
        s.pattern = parse_pattern(o);
        s.seed = o.unsigned_integer("seed", 0);
        s.direct = o.boolean("direct", false);
        s.append = o.boolean("append", false);
        s.create = o.boolean("create", true);
        break;
    case Op::fsync:
    case Op::fdatasync:
        parse_target(o, s);
        break;
    case Op::drop_caches:
        s.value = static_cast<int>(o.integer("value", 3, 1, 3));
        break;
    case Op::truncate:
        s.path = o.path("path");
        s.size = o.integer("size", std::nullopt, 0, kMax);
        break;
    case Op::mmap_write:
        s.path = o.path("path");
        s.offset = o.integer("offset", 0, 0, kMax);
        s.length = o.integer("length", std::nullopt, 1, kMax);
        s.pattern = parse_pattern(o);
        s.seed = o.unsigned_integer("seed", 0);
        break;
    case Op::fiemap:
        s.path = o.path("path");
        break;
    case Op::rename:
        s.path = o.path("path");
        s.to = o.path("to");
        break;
    case Op::sleep:
        s.ms = o.integer("ms", std::nullopt, 0, 24LL * 3600 * 1000);
        break;
    case Op::open:
        s.path = o.path("path");
        s.fd = o.string("fd", std::nullopt);
        s.access = parse_access(o);
        s.create = o.boolean("create", false);
        s.direct = o.boolean("direct", false);
        s.append = o.boolean("append", false);
        break;
    case Op::close:
        s.fd = o.string("fd", std::nullopt);
        break;
    }
    if (s.op == Op::read || s.op == Op::write || s.op == Op::mmap_write) s.sha256 = o.boolean("sha256", false);
    if ((s.op == Op::open || s.op == Op::close || o.has("fd")) && !is_name(s.fd, "-."))
        o.fail("fd", "must be a name of letters, digits, _ - ., got '" + s.fd + "'");
    if (s.op == Op::open && s.create && s.access == Access::read) o.fail("create", "needs access \"w\" or \"rw\"");
    return s;
}

// Named descriptors must be opened before use and not used after close.
void check_fd_names(const std::vector<Step>& steps) {
    std::set<std::string> open;
    for (size_t i = 0; i < steps.size(); ++i) {
        const Step& s = steps[i];
        if (s.op == Op::open) {
            open.insert(s.fd);
        } else if (!s.fd.empty()) {
            if (!open.count(s.fd))
                throw SpecError("steps[" + std::to_string(i) + "].fd", "'" + s.fd + "' is not opened by an earlier open step");
            if (s.op == Op::close) open.erase(s.fd);
        }
    }
}

Marker parse_marker(const Json& j) {
    const Object o(j, "marker");
    o.only({"first_sector", "count", "block_size"}, "");
    Marker m;
    constexpr int64_t kMaxSector = std::numeric_limits<int64_t>::max() / 512;
    m.first_sector = static_cast<uint64_t>(o.integer("first_sector", std::nullopt, 1, kMaxSector));
    m.count = static_cast<uint64_t>(o.integer("count", std::nullopt, 1, std::numeric_limits<uint32_t>::max()));
    m.block_size = static_cast<uint32_t>(o.integer("block_size", 512, 512, 4096));
    if (m.block_size & (m.block_size - 1))
        o.fail("block_size", "must be 512, 1024, 2048 or 4096, got " + std::to_string(m.block_size));
    return m;
}

TraceSpec parse_trace(const Json& j) {
    const Object o(j, "trace");
    o.only({"events", "functions", "buffer_kb", "filter_hint"}, "");
    TraceSpec t;
    t.events = o.strings("events");
    for (size_t i = 0; i < t.events.size(); ++i) {
        const std::string& e = t.events[i];
        const auto slash = e.find('/');
        const bool ok = slash == std::string::npos ? is_name(e) : is_name(e.substr(0, slash)) && is_name(e.substr(slash + 1));
        if (!ok)
            throw SpecError(o.field("events") + "[" + std::to_string(i) + "]",
                            "expected \"subsystem/event\" or \"subsystem\", got '" + e + "'");
    }
    t.functions = o.strings("functions");
    for (size_t i = 0; i < t.functions.size(); ++i) {
        if (!is_name(t.functions[i], "*?[]!.-"))
            throw SpecError(o.field("functions") + "[" + std::to_string(i) + "]",
                            "expected a function name or glob, got '" + t.functions[i] + "'");
    }
    t.buffer_kb = o.integer("buffer_kb", 0, 0, 1 << 22);
    if (const Json* h = o.get("filter_hint")) {
        const Object ho(*h, o.field("filter_hint"));
        ho.only({"lines", "selected", "missing"}, "");
        FilterHint hint;
        const Json& lines = ho.need("lines");
        if (!lines.is_array()) ho.fail("lines", std::string("expected an array of line numbers, got ") + type_name(lines));
        uint64_t prev = 0;
        for (size_t i = 0; i < lines.size(); ++i) {
            const Json& l = lines[i];
            // Ascending from 1, and no more than a kernel has functions.
            if (!l.is_number_unsigned() || l.get<uint64_t>() <= prev || l.get<uint64_t>() > (1u << 22))
                throw SpecError(ho.field("lines") + "[" + std::to_string(i) + "]",
                                "expected a line number above the one before it and at most 4194304, got " +
                                    (l.is_number_unsigned() ? std::to_string(l.get<uint64_t>()) : std::string(type_name(l))));
            prev = l.get<uint64_t>();
            hint.lines.push_back(prev);
        }
        hint.selected = ho.strings("selected");
        hint.missing = ho.strings("missing");
        for (const auto* names : {&hint.selected, &hint.missing})
            for (size_t i = 0; i < names->size(); ++i)
                if (!is_name((*names)[i], "*?[]!.-"))
                    throw SpecError(ho.field(names == &hint.selected ? "selected" : "missing") + "[" + std::to_string(i) + "]",
                                    "expected a function name or glob, got '" + (*names)[i] + "'");
        if (hint.lines.empty() != hint.selected.empty())
            ho.fail("lines", "a hint names lines and the functions they set, or neither");
        t.hint = std::move(hint);
    }
    return t;
}

ExtentCheck parse_extent_check(const Json& j, const std::string& steps_mountpoint) {
    const Object o(j, "extent_check");
    o.only({"mountpoint", "fstype", "options", "files"}, "");
    ExtentCheck c;
    c.mountpoint = o.path("mountpoint");
    if (c.mountpoint == steps_mountpoint)
        o.fail("mountpoint", "must differ from the steps' mountpoint " + steps_mountpoint);
    c.fstype = o.string("fstype", "");
    if (c.fstype.empty()) o.fail("fstype", "the check mounts the disk and needs its filesystem type");
    c.options = o.string("options", "");
    c.files = o.strings("files");
    for (size_t i = 0; i < c.files.size(); ++i)
        if (c.files[i].empty() || c.files[i][0] != '/')
            throw SpecError(o.field("files") + "[" + std::to_string(i) + "]", "expected a path starting with /, got '" + c.files[i] + "'");
    return c;
}

std::vector<std::pair<std::string, std::string>> parse_queue(const Json& j) {
    const Object o(j, "queue");
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [key, value] : j.items()) {
        if (!is_name(key)) o.fail(key, "not a queue attribute name");
        if (value.is_string()) {
            out.emplace_back(key, value.get<std::string>());
        } else if (value.is_number_integer()) {
            out.emplace_back(key, value.dump());
        } else {
            o.fail(key, std::string("expected a string or an integer, got ") + type_name(value));
        }
    }
    return out;
}

}  // namespace

const char* op_name(Op op) { return info(op).name; }

std::optional<Op> op_from_name(std::string_view name) {
    for (const auto& i : ops())
        if (name == i.name) return i.op;
    return std::nullopt;
}

namespace {

// A field name or value quoted from the description may hold any byte JSON
// can escape; what() is a C string and the error record one line, so control
// bytes are spelt out rather than cutting the message at a NUL or a newline.
std::string printable(std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(s.size());
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            out += "\\x";
            out += kHex[u >> 4];
            out += kHex[u & 0xf];
        } else {
            out += c;
        }
    }
    return out;
}

}  // namespace

SpecError::SpecError(std::string field, const std::string& problem)
    : std::runtime_error(field.empty() ? printable(problem) : printable(field) + ": " + printable(problem)),
      field_(printable(field)) {}

MountOptions split_mount_options(std::string_view options) {
    struct Flag {
        std::string_view word;
        unsigned long set;
    };
    static constexpr Flag kFlags[] = {
        {"ro", MS_RDONLY},        {"rw", 0},           {"defaults", 0},         {"nosuid", MS_NOSUID},
        {"nodev", MS_NODEV},      {"noexec", MS_NOEXEC}, {"sync", MS_SYNCHRONOUS}, {"dirsync", MS_DIRSYNC},
        {"noatime", MS_NOATIME},  {"nodiratime", MS_NODIRATIME}, {"relatime", MS_RELATIME},
        {"strictatime", MS_STRICTATIME}, {"lazytime", MS_LAZYTIME},
    };
    MountOptions out;
    while (!options.empty()) {
        const auto comma = options.find(',');
        const std::string_view word = options.substr(0, comma);
        options = comma == std::string_view::npos ? std::string_view{} : options.substr(comma + 1);
        if (word.empty()) continue;
        const auto* f = std::find_if(std::begin(kFlags), std::end(kFlags), [&](const Flag& x) { return x.word == word; });
        if (f != std::end(kFlags)) {
            out.flags |= f->set;
            continue;
        }
        if (!out.data.empty()) out.data += ',';
        out.data += word;
    }
    return out;
}

RunSpec parse_run_spec(std::string_view json_text) {
    Json j;
    try {
        j = Json::parse(json_text);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number beyond a double
        throw SpecError("", std::string("not valid JSON: ") + e.what());
    }
    const Object o(j, "");
    o.only({"version", "modules", "disk", "mountpoint", "fstype", "mount_options", "queue", "marker", "trace",
            "step_timeout_s", "extent_check", "steps"},
           "");
    RunSpec r;
    r.version = static_cast<int>(o.integer("version", std::nullopt, 0, 1000));
    if (r.version != 1) o.fail("version", "this agent speaks version 1, not " + std::to_string(r.version));
    r.modules = o.strings("modules");
    r.disk = o.path("disk");
    if (o.has("mountpoint")) r.mountpoint = o.path("mountpoint");
    r.fstype = o.string("fstype", "");
    r.mount_options = o.string("mount_options", "");
    r.mount = split_mount_options(r.mount_options);
    if (const Json* q = o.get("queue")) r.queue = parse_queue(*q);
    if (const Json* m = o.get("marker")) r.marker = parse_marker(*m);
    if (const Json* t = o.get("trace")) r.trace = parse_trace(*t);
    r.step_timeout_s = o.integer("step_timeout_s", 60, 1, 24 * 3600);
    if (const Json* c = o.get("extent_check")) r.extent_check = parse_extent_check(*c, r.mountpoint);

    const Json& steps = o.need("steps");
    if (!steps.is_array()) o.fail("steps", std::string("expected a list, got ") + type_name(steps));
    for (size_t i = 0; i < steps.size(); ++i) {
        r.steps.push_back(parse_step(steps[i], i));
        if (r.steps.back().op == Op::mount && r.fstype.empty())
            throw SpecError("steps[" + std::to_string(i) + "].op", "mount needs a filesystem type, but fstype is empty");
    }
    check_fd_names(r.steps);
    if (r.marker && r.marker->count < markers::needed_for(r.steps.size()))
        throw SpecError("marker.count", std::to_string(r.steps.size()) + " steps need " + std::to_string(markers::needed_for(r.steps.size())) +
                                            " marker blocks, count is " + std::to_string(r.marker->count));
    return r;
}

}  // namespace blkrig::agent
