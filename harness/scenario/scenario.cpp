#include "scenario/scenario.hpp"

#include "faults/rule.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <fstream>
#include <set>
#include <sstream>

namespace blkrig::scenario {

ScenarioError::ScenarioError(std::string f, int l, int c, const std::string& what)
    : std::runtime_error(fmt::format("{}:{}:{}: {}", f, l, c, what)), file(std::move(f)), line(l), column(c) {}

std::optional<uint64_t> parse_size(std::string_view s) {
    if (s.empty()) return std::nullopt;
    uint64_t mult = 1;
    switch (s.back()) {
    case 'K': case 'k': mult = 1ull << 10; break;
    case 'M': case 'm': mult = 1ull << 20; break;
    case 'G': case 'g': mult = 1ull << 30; break;
    default: break;
    }
    if (mult != 1) s.remove_suffix(1);
    if (s.empty() || s.size() > 15) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    if (v > UINT64_MAX / mult) return std::nullopt;  // would wrap to a small size
    return v * mult;
}

namespace {

// Reads one scenario file; every error names the file, line and column.
class Reader {
public:
    explicit Reader(std::string file) : file_(std::move(file)) {}

    [[noreturn]] void fail(const toml::source_region& at, const std::string& what) const {
        throw ScenarioError(file_, static_cast<int>(at.begin.line), static_cast<int>(at.begin.column), what);
    }
    [[noreturn]] void fail(const toml::node& n, const std::string& what) const { fail(n.source(), what); }

    // Unknown keys are errors: a typo must not silently do nothing.
    void only(const toml::table& t, const std::string& where, std::initializer_list<const char*> allowed) const {
        const std::set<std::string> ok(allowed.begin(), allowed.end());
        for (auto&& [k, v] : t) {
            if (!ok.count(std::string(k.str()))) {
                std::string known;
                for (const auto& a : allowed) known += (known.empty() ? "" : ", ") + std::string(a);
                fail(k.source(), fmt::format("unknown key '{}' in {} (known: {})", k.str(), where, known));
            }
        }
    }

    std::string str(const toml::node& n, const std::string& what) const {
        if (!n.is_string()) fail(n, fmt::format("{} must be a string", what));
        return std::string(*n.value<std::string_view>());
    }
    int64_t integer(const toml::node& n, const std::string& what, int64_t lo, int64_t hi) const {
        if (!n.is_integer()) fail(n, fmt::format("{} must be an integer", what));
        const int64_t v = *n.value<int64_t>();
        if (v < lo || v > hi) fail(n, fmt::format("{} is {}, must be from {} to {}", what, v, lo, hi));
        return v;
    }
    bool boolean(const toml::node& n, const std::string& what) const {
        if (!n.is_boolean()) fail(n, fmt::format("{} must be true or false", what));
        return *n.value<bool>();
    }
    uint64_t size(const toml::node& n, const std::string& what) const {
        if (n.is_integer()) {
            const int64_t v = *n.value<int64_t>();
            if (v < 0) fail(n, fmt::format("{} must not be negative", what));
            return static_cast<uint64_t>(v);
        }
        if (n.is_string()) {
            if (auto v = parse_size(*n.value<std::string_view>())) return *v;
        }
        fail(n, fmt::format("{} must be a size: bytes, or a number with K, M or G (e.g. \"4M\")", what));
    }
    std::string one_of(const toml::node& n, const std::string& what, std::initializer_list<const char*> values) const {
        const std::string v = str(n, what);
        std::string known;
        for (const auto& a : values) {
            if (v == a) return v;
            known += (known.empty() ? "" : ", ") + std::string(a);
        }
        fail(n, fmt::format("{} '{}' is not one of: {}", what, v, known));
    }
    const toml::table& table(const toml::node& n, const std::string& what) const {
        if (!n.is_table()) fail(n, fmt::format("{} must be a table", what));
        return *n.as_table();
    }

    std::string file_;
};

// The fields each step op takes besides `op` and `expect`.
const std::map<std::string, std::set<std::string>>& step_fields() {
    static const std::map<std::string, std::set<std::string>> f = {
        {"mount", {}},
        {"umount", {}},
        {"read", {"path", "fd", "offset", "length", "bs", "direct"}},
        {"write", {"path", "fd", "offset", "length", "bs", "pattern", "seed", "direct", "append", "create"}},
        {"fsync", {"path", "fd"}},
        {"fdatasync", {"path", "fd"}},
        {"open", {"path", "fd", "access", "create", "direct", "append"}},
        {"close", {"fd"}},
        {"sync", {}},
        {"drop_caches", {"value"}},
        {"truncate", {"path", "size"}},
        {"rename", {"path", "to"}},
        {"mmap_write", {"path", "offset", "length", "pattern", "seed"}},
        {"fiemap", {"path"}},
        {"sleep", {"ms"}},
    };
    return f;
}

// An [[expect]] table's values as JSON; what they mean is the checks' business.
ExpectTable expect_table(const Reader& rd, const toml::table& t) {
    ExpectTable e;
    e.line = static_cast<int>(t.source().begin.line);
    e.values = nlohmann::json::object();
    auto scalar = [&](const toml::node& v, const std::string& key) -> nlohmann::json {
        if (v.is_string()) return std::string(*v.value<std::string_view>());
        if (v.is_integer()) return *v.value<int64_t>();
        if (v.is_floating_point()) return *v.value<double>();
        if (v.is_boolean()) return *v.value<bool>();
        rd.fail(v, fmt::format("expect.{} must be a string, number, boolean or a list of them", key));
    };
    for (auto&& [k, v] : t) {
        const std::string key(k.str());
        e.key_lines[key] = static_cast<int>(k.source().begin.line);
        if (v.is_array()) {
            nlohmann::json a = nlohmann::json::array();
            for (auto& x : *v.as_array()) a.push_back(scalar(x, key));
            e.values[key] = std::move(a);
        } else {
            e.values[key] = scalar(v, key);
        }
    }
    return e;
}

std::vector<ExpectTable> expect_tables(const Reader& rd, const toml::node& n) {
    if (!n.is_array_of_tables()) rd.fail(n, "expect must be [[expect]] tables");
    std::vector<ExpectTable> out;
    for (auto& t : *n.as_array()) out.push_back(expect_table(rd, *t.as_table()));
    return out;
}

const std::set<std::string>& queue_knobs() {
    static const std::set<std::string> k = {"scheduler", "nomerges", "read_ahead_kb", "max_sectors_kb", "rq_affinity"};
    return k;
}

toml::table parse_toml(std::string_view text, const std::string& file) {
    try {
        return toml::parse(text, file);
    } catch (const toml::parse_error& e) {
        throw ScenarioError(file, static_cast<int>(e.source().begin.line), static_cast<int>(e.source().begin.column),
                            fmt::format("not valid TOML: {}", e.description()));
    }
}

}  // namespace

namespace {

// [scenario]: name, description, kernel, timeout, extent_check, needs.
void read_scenario(const Reader& rd, const toml::table& root, Scenario& sc) {
    if (auto* s = root["scenario"].node()) {
        const auto& t = rd.table(*s, "[scenario]");
        rd.only(t, "[scenario]", {"name", "description", "kernel", "timeout", "extent_check", "needs"});
        if (auto* n = t["name"].node()) sc.name = rd.str(*n, "scenario.name");
        if (auto* n = t["description"].node()) sc.description = rd.str(*n, "scenario.description");
        if (auto* n = t["kernel"].node()) sc.kernel = rd.str(*n, "scenario.kernel");
        if (auto* n = t["extent_check"].node()) {
            if (!n->is_boolean()) rd.fail(*n, "scenario.extent_check must be true or false");
            sc.extent_check = n->as_boolean()->get();
        }
        if (auto* n = t["needs"].node()) {
            const auto* a = n->as_array();
            if (!a) rd.fail(*n, "scenario.needs is a list, e.g. [\"disk-from\"]");
            for (const auto& e : *a) sc.needs.push_back(rd.one_of(e, "scenario.needs", {"disk-from", "control"}));
            sc.needs_line = static_cast<int>(n->source().begin.line);
        }
        if (auto* n = t["timeout"].node()) sc.timeout_s = static_cast<unsigned>(rd.integer(*n, "scenario.timeout (seconds)", 10, 3600));
    }
}

// [disk] and its [[disk.files]]: the filesystem the image is made with.
void read_disk(const Reader& rd, const toml::table& root, Scenario& sc) {
    if (auto* d = root["disk"].node()) {
        const auto& t = rd.table(*d, "[disk]");
        rd.only(t, "[disk]", {"fs", "size", "fat_bits", "cluster", "block", "files"});
        if (auto* n = t["fs"].node()) {
            sc.disk.fs = rd.one_of(*n, "disk.fs", {"vfat", "exfat", "ext4", "ext2", "raw"});
            sc.disk.fs_line = static_cast<int>(n->source().begin.line);
        }
        if (auto* n = t["size"].node()) {
            sc.disk.size_bytes = rd.size(*n, "disk.size");
            sc.disk.size_line = static_cast<int>(n->source().begin.line);
        }
        if (sc.disk.size_bytes < (1u << 20) || sc.disk.size_bytes % 512)
            rd.fail(t["size"].node() ? t["size"].node()->source() : t.source(), "disk.size must be at least 1M and a multiple of 512");
        if (auto* n = t["fat_bits"].node()) {
            sc.disk.fat_bits = static_cast<unsigned>(rd.integer(*n, "disk.fat_bits", 12, 32));
            if (sc.disk.fat_bits != 12 && sc.disk.fat_bits != 16 && sc.disk.fat_bits != 32) rd.fail(*n, "disk.fat_bits must be 12, 16 or 32");
        }
        if (auto* n = t["cluster"].node()) sc.disk.cluster_bytes = static_cast<uint32_t>(rd.size(*n, "disk.cluster"));
        if (auto* n = t["block"].node()) sc.disk.block_bytes = static_cast<uint32_t>(rd.size(*n, "disk.block"));
        if (auto* files = t["files"].node()) {
            if (!files->is_array_of_tables()) rd.fail(*files, "disk.files must be [[disk.files]] tables");
            uint64_t total = 0;
            for (auto& fn : *files->as_array()) {
                const auto& ft = *fn.as_table();
                rd.only(ft, "[[disk.files]]", {"path", "size", "content", "seed", "layout", "extents", "split_at", "holes"});
                FileSpec f;
                if (!ft["path"].node()) rd.fail(ft, "[[disk.files]] needs a path, e.g. path = \"/f1.bin\"");
                f.path = rd.str(*ft["path"].node(), "disk.files.path");
                if (f.path.empty() || f.path[0] != '/' || f.path.find("..") != std::string::npos)
                    rd.fail(*ft["path"].node(), fmt::format("file path '{}' must be absolute inside the filesystem, e.g. \"/f1.bin\"", f.path));
                if (!ft["size"].node()) rd.fail(ft, fmt::format("file {} needs a size", f.path));
                f.size_bytes = rd.size(*ft["size"].node(), "disk.files.size");
                if (auto* n = ft["content"].node()) f.content = rd.one_of(*n, "disk.files.content", {"random", "zero", "pattern"});
                if (auto* n = ft["seed"].node()) f.seed = static_cast<uint64_t>(rd.integer(*n, "disk.files.seed", 0, INT64_MAX));
                if (auto* n = ft["layout"].node()) f.layout = rd.one_of(*n, "disk.files.layout", {"contiguous", "fragmented", "sparse"});
                if (auto* n = ft["extents"].node()) f.extents = static_cast<unsigned>(rd.integer(*n, "disk.files.extents", 2, 1024));
                if (f.layout == "fragmented" && f.extents == 0) rd.fail(ft, fmt::format("file {}: layout \"fragmented\" needs extents = N (2 or more)", f.path));
                if (f.layout != "fragmented" && ft["extents"].node()) rd.fail(*ft["extents"].node(), "extents only applies to layout = \"fragmented\"");
                if (auto* n = ft["split_at"].node()) {
                    if (f.layout != "fragmented" || !n->is_array()) rd.fail(*n, "split_at is a list of file offsets for layout = \"fragmented\"");
                    for (auto& v : *n->as_array()) f.split_at.push_back(rd.size(v, "split_at entry"));
                    if (f.split_at.size() + 1 != f.extents)
                        rd.fail(*n, fmt::format("split_at has {} offsets; extents = {} needs {}", f.split_at.size(), f.extents, f.extents - 1));
                }
                if (auto* n = ft["holes"].node()) {
                    if (f.layout != "sparse") rd.fail(*n, "holes only applies to layout = \"sparse\"");
                    if (!n->is_array()) rd.fail(*n, "holes must be a list of [offset, length] pairs");
                    for (auto& h : *n->as_array()) {
                        if (!h.is_array() || h.as_array()->size() != 2) rd.fail(h, "each hole is [offset, length]");
                        f.holes.emplace_back(rd.size(*h.as_array()->get(0), "hole offset"), rd.size(*h.as_array()->get(1), "hole length"));
                    }
                }
                if (f.layout == "sparse" && sc.disk.fs != "ext4" && sc.disk.fs != "ext2")
                    rd.fail(ft, fmt::format("file {}: sparse files need disk.fs = \"ext4\" or \"ext2\"", f.path));
                total += f.size_bytes;
                if (f.size_bytes > sc.disk.size_bytes || total > sc.disk.size_bytes)
                    rd.fail(ft["size"].node()->source(), fmt::format("file {} ({} bytes) does not fit on the {}-byte disk; make disk.size larger",
                                                                     f.path, f.size_bytes, sc.disk.size_bytes));
                sc.disk.files.push_back(std::move(f));
            }
        }
    }
    if (sc.disk.fs == "raw" && !sc.disk.files.empty()) rd.fail(root["disk"].node()->source(), "a raw disk has no files; use fs = \"vfat\" or another filesystem");
}

// [device]: the geometry and features blkrig-device offers.
void read_device(const Reader& rd, const toml::table& root, Scenario& sc) {
    if (auto* d = root["device"].node()) {
        const auto& t = rd.table(*d, "[device]");
        rd.only(t, "[device]",
                {"seg_max", "size_max", "num_queues", "queue_size", "logical_block_size", "write_cache", "read_only", "restart_on_crash"});
        if (auto* n = t["seg_max"].node()) sc.device.seg_max = static_cast<uint32_t>(rd.integer(*n, "device.seg_max", 1, 1024));
        if (auto* n = t["size_max"].node()) sc.device.size_max = static_cast<uint32_t>(rd.size(*n, "device.size_max"));
        if (auto* n = t["num_queues"].node()) sc.device.num_queues = static_cast<uint16_t>(rd.integer(*n, "device.num_queues", 1, 64));
        if (auto* n = t["queue_size"].node()) {
            sc.device.queue_size = static_cast<uint16_t>(rd.integer(*n, "device.queue_size", 2, 1024));
            if (sc.device.queue_size & (sc.device.queue_size - 1)) rd.fail(*n, "device.queue_size must be a power of two");
        }
        if (auto* n = t["logical_block_size"].node()) {
            sc.device.logical_block_size = static_cast<uint32_t>(rd.integer(*n, "device.logical_block_size", 512, 4096));
            if (sc.device.logical_block_size & (sc.device.logical_block_size - 1)) rd.fail(*n, "device.logical_block_size must be 512, 1024, 2048 or 4096");
        }
        if (auto* n = t["write_cache"].node()) sc.device.write_cache = rd.boolean(*n, "device.write_cache");
        if (auto* n = t["read_only"].node()) sc.device.read_only = rd.boolean(*n, "device.read_only");
        if (auto* n = t["restart_on_crash"].node()) sc.device.restart_on_crash = rd.boolean(*n, "device.restart_on_crash");
    }
}

// [guest]: queue knobs, memory, mount options, programs. Needs [disk].
void read_guest(const Reader& rd, const toml::table& root, Scenario& sc) {
    if (auto* g = root["guest"].node()) {
        const auto& t = rd.table(*g, "[guest]");
        rd.only(t, "[guest]",
                {"scheduler", "nomerges", "read_ahead_kb", "max_sectors_kb", "rq_affinity", "memory", "mount_options", "step_timeout", "programs",
                 "ext2_driver", "trace_buffer"});
        if (auto* n = t["programs"].node()) {
            if (!n->is_array()) rd.fail(*n, "guest.programs must be a list of program names, e.g. [\"fio\"]");
            for (auto& p : *n->as_array()) sc.guest.programs.push_back(rd.str(p, "guest.programs entry"));
        }
        for (auto&& [k, v] : t) {
            const std::string key(k.str());
            if (!queue_knobs().count(key)) continue;
            if (v.is_integer()) sc.guest.queue[key] = std::to_string(*v.value<int64_t>());
            else sc.guest.queue[key] = rd.str(v, "guest." + key);
        }
        if (auto* n = t["memory"].node()) {
            const uint64_t mb = rd.size(*n, "guest.memory") >> 20;
            if (mb > UINT32_MAX) rd.fail(*n, fmt::format("guest.memory is {} MiB, more than any host has", mb));
            sc.guest.memory_mb = static_cast<unsigned>(mb);
            sc.guest.memory_line = static_cast<int>(n->source().begin.line);
        }
        if (sc.guest.memory_mb < 128) rd.fail(t["memory"].node()->source(), "guest.memory must be at least 128M");
        if (auto* n = t["mount_options"].node()) sc.guest.mount_options = rd.str(*n, "guest.mount_options");
        if (auto* n = t["step_timeout"].node()) sc.guest.step_timeout_s = static_cast<unsigned>(rd.integer(*n, "guest.step_timeout (seconds)", 1, 3600));
        if (auto* n = t["trace_buffer"].node()) {
            const uint64_t b = rd.size(*n, "guest.trace_buffer");
            if (b < (64u << 10) || b > (1ull << 30)) rd.fail(*n, "guest.trace_buffer must be between 64K and 1G (per guest CPU)");
            sc.guest.trace_buffer_kb = b >> 10;
        }
        if (auto* n = t["ext2_driver"].node()) {
            sc.guest.ext2_driver = rd.one_of(*n, "guest.ext2_driver", {"auto", "ext2", "ext4"});
            sc.guest.ext2_driver_line = static_cast<int>(n->source().begin.line);
            if (sc.guest.ext2_driver != "auto" && sc.disk.fs != "ext2")
                rd.fail(*n, fmt::format("guest.ext2_driver applies to ext2 disks only (disk.fs is \"{}\")", sc.disk.fs));
        }
    }
}

// [[faults]]: rules, checked against the device the run starts. Needs [disk] and [device].
void read_faults(const Reader& rd, const toml::table& root, Scenario& sc) {
    if (auto* fl = root["faults"].node()) {
        if (!fl->is_array_of_tables()) rd.fail(*fl, "faults must be [[faults]] tables");
        for (auto& fn : *fl->as_array()) {
            const auto& ft = *fn.as_table();
            rd.only(ft, "[[faults]]", {"rule", "file", "offset", "length", "after_step", "until_step"});
            FaultSpec f;
            f.line = static_cast<int>(ft.source().begin.line);
            auto* rn = ft["rule"].node();
            if (!rn) rd.fail(ft, "[[faults]] needs a rule, e.g. rule = \"ioerr op=read\"");
            f.rule = rd.str(*rn, "faults.rule");
            auto parsed = faults::parse_rule(f.rule);
            if (auto* e = std::get_if<faults::RuleError>(&parsed)) {
                // Point at the column inside the quoted rule text.
                toml::source_region at = rn->source();
                at.begin.column += static_cast<toml::source_index>(e->column);
                rd.fail(at, fmt::format("fault rule: {}", e->message));
            }
            // The device the run starts: the disk, the marker region, device.num_queues.
            if (auto why = faults::never_fires(std::get<faults::Rule>(parsed), device_capacity_sectors(sc), sc.device.num_queues))
                rd.fail(*rn, fmt::format("fault rule: {} (the device has disk.size = {} bytes and {} marker sectors, device.num_queues = {})",
                                         *why, sc.disk.size_bytes, kMarkerSectors, sc.device.num_queues));
            if (auto* n = ft["file"].node()) {
                f.file = rd.str(*n, "faults.file");
                bool known = false;
                for (const auto& df : sc.disk.files) known = known || df.path == f.file;
                if (!known) rd.fail(*n, fmt::format("faults.file '{}' is not in [[disk.files]]", f.file));
                const auto& r = std::get<faults::Rule>(parsed);
                if (r.first_sector != 0 || r.last_sector != UINT64_MAX) rd.fail(*rn, "give either sector= in the rule or file=, not both");
            } else if (ft["offset"].node() || ft["length"].node()) {
                rd.fail(ft, "offset and length need file = a path from [[disk.files]]");
            }
            if (auto* n = ft["after_step"].node()) f.after_step = static_cast<int>(rd.integer(*n, "faults.after_step (a step index, from 0)", 0, 100000));
            if (auto* n = ft["until_step"].node()) {
                f.until_step = static_cast<int>(rd.integer(*n, "faults.until_step (a step index, from 0)", 0, 100000));
                if (f.until_step <= f.after_step) rd.fail(*n, "until_step must come after after_step");
            }
            if (std::get<faults::Rule>(parsed).until_marker >= 0 && f.until_step >= 0)
                rd.fail(*rn, "give either until_marker= in the rule or until_step, not both");
            if (std::get<faults::Rule>(parsed).after_marker >= 0 && f.after_step >= 0)
                rd.fail(*rn, "give either after_marker= in the rule or after_step, not both");
            if (auto* n = ft["offset"].node()) f.offset = rd.size(*n, "faults.offset");
            if (auto* n = ft["length"].node()) f.length = rd.size(*n, "faults.length");
            sc.faults.push_back(std::move(f));
        }
    }
}

// [[steps]]: what the agent runs, each op with its own fields. Needs [disk] and [device].
void read_steps(const Reader& rd, const toml::table& root, Scenario& sc) {
    const std::string& file = sc.file;
    auto* steps = root["steps"].node();
    if (!steps || !steps->is_array_of_tables() || steps->as_array()->empty())
        throw ScenarioError(file, 1, 1, "no steps: add [[steps]] tables, e.g. [[steps]] op = \"mount\"");
    for (auto& sn : *steps->as_array()) {
        const auto& t = *sn.as_table();
        Step st;
        st.line = static_cast<int>(t.source().begin.line);
        if (!t["op"].node()) rd.fail(t, "[[steps]] needs an op");
        const auto& ops = step_fields();
        st.op = rd.str(*t["op"].node(), "steps.op");
        auto it = ops.find(st.op);
        if (it == ops.end()) {
            std::string known;
            for (const auto& [k, v] : ops) known += (known.empty() ? "" : ", ") + k;
            rd.fail(*t["op"].node(), fmt::format("unknown step op '{}' (known: {})", st.op, known));
        }
        st.args = {{"op", st.op}};
        for (auto&& [k, v] : t) {
            const std::string key(k.str());
            if (key == "op") continue;
            if (key == "expect") {
                const auto& et = rd.table(v, "steps.expect");
                rd.only(et, "expect", {"ret", "errno", "bytes", "sha256"});
                if (auto* n = et["ret"].node()) st.expect.ret = rd.integer(*n, "expect.ret", INT32_MIN, INT32_MAX);
                if (auto* n = et["errno"].node()) st.expect.error = rd.str(*n, "expect.errno");
                if (auto* n = et["bytes"].node()) st.expect.bytes = rd.size(*n, "expect.bytes");
                if (auto* n = et["sha256"].node()) {
                    st.expect.sha256 = rd.str(*n, "expect.sha256");
                    const auto& h = *st.expect.sha256;
                    const bool hex = h.size() == 64 && h.find_first_not_of("0123456789abcdef") == std::string::npos;
                    if (h != "file" && !hex) rd.fail(*n, "expect.sha256 must be \"file\" (the content the disk was built with) or 64 hex digits");
                }
                continue;
            }
            if (key == "cpu") {
                // The guest has a vCPU per queue (launch/boot.hpp).
                const int64_t cpu = rd.integer(v, "steps.cpu", 0, 63);
                if (cpu >= sc.device.num_queues)
                    rd.fail(v, fmt::format("steps.cpu = {} needs a guest with {} CPUs: the guest gets one per queue, set device.num_queues = {}",
                                           cpu, cpu + 1, cpu + 1));
                st.args[key] = cpu;
                continue;
            }
            if (!it->second.count(key)) {
                std::string known;
                for (const auto& f : it->second) known += (known.empty() ? "" : ", ") + f;
                rd.fail(k.source(), fmt::format("step '{}' has no field '{}' (fields: {})", st.op, key, known.empty() ? "cpu" : known + ", cpu"));
            }
            if (key == "path" || key == "to") {
                const std::string p = rd.str(v, key);
                const std::string mp = std::string(kMountpoint) + "/";
                // fsync of the mount's own directory is what makes a rename in it durable.
                const bool mount_dir = p == kMountpoint && (st.op == "fsync" || st.op == "fdatasync");
                if (!mount_dir && (p.rfind(mp, 0) != 0 || p.find("/../") != std::string::npos || p.size() <= mp.size()))
                    rd.fail(v, fmt::format("{} '{}' is outside the mount: step paths start with {}", key, p, mp));
                st.args[key] = p;
            } else if (key == "fd") {
                st.args[key] = rd.str(v, "fd (a name given at open)");
            } else if (key == "access") {
                st.args[key] = rd.one_of(v, "access", {"r", "w", "rw"});
            } else if (key == "pattern") {
                st.args[key] = rd.one_of(v, "pattern", {"random", "zero"});
            } else if (v.is_boolean()) {
                st.args[key] = *v.value<bool>();
            } else if (key == "seed" || key == "ms" || key == "value") {
                st.args[key] = rd.integer(v, key, 0, INT64_MAX);
            } else if (key == "length" && v.is_integer() && *v.value<int64_t>() == -1) {
                st.args[key] = -1;
            } else {
                st.args[key] = rd.size(v, key);
            }
        }
        const bool wants_fd = it->second.count("fd") && (st.op == "close" || st.op == "open");
        if (wants_fd && !st.args.contains("fd")) rd.fail(t, fmt::format("step '{}' needs fd = a name", st.op));
        if (st.op == "rename" && !st.args.contains("to")) rd.fail(t, "step 'rename' needs to = the new path");
        if (it->second.count("path") && !st.args.contains("path") && !(it->second.count("fd") && st.args.contains("fd") && st.op != "open"))
            rd.fail(t, fmt::format("step '{}' needs a path{}", st.op, it->second.count("fd") ? " or fd" : ""));
        if (st.expect.sha256 == "file") {
            // A path outside the mountpoint (or none: a step by fd) names no file of the disk.
            const std::string full = st.args.value("path", "");
            const std::string mnt(kMountpoint);
            const std::string p = full.starts_with(mnt + "/") ? full.substr(mnt.size()) : std::string();
            bool known = false;
            for (const auto& f : sc.disk.files) known = known || f.path == p;
            if (!known || st.op != "read")
                rd.fail(t, fmt::format("expect.sha256 = \"file\" needs a read step of a file in [[disk.files]] ('{}' is not one)", full));
        }
        sc.steps.push_back(std::move(st));
    }
}

// [power_cut]: where the crash model cuts. Needs [[steps]] and [device].
void read_power_cut(const Reader& rd, const toml::table& root, Scenario& sc) {
    if (auto* pc = root["power_cut"].node()) {
        if (!pc->is_table()) rd.fail(*pc, "power_cut must be a table: [power_cut]");
        const auto& t = *pc->as_table();
        rd.only(t, "[power_cut]", {"after_step", "mode", "seed", "share"});
        sc.power_cut.line = static_cast<int>(t.source().begin.line);
        auto* as = t["after_step"].node();
        if (!as) rd.fail(t, "[power_cut] needs after_step: the step after which the power goes off");
        sc.power_cut.after_step = static_cast<int>(rd.integer(*as, "power_cut.after_step (a step index, from 0)", 0, 100000));
        if (sc.power_cut.after_step != static_cast<int>(sc.steps.size()) - 1)
            rd.fail(*as, fmt::format("power_cut.after_step must be the last step ({}): nothing after the power cut reaches the disk",
                                     static_cast<int>(sc.steps.size()) - 1));
        if (auto* n = t["mode"].node()) {
            sc.power_cut.mode = rd.str(*n, "power_cut.mode");
            if (sc.power_cut.mode != "drop_all" && sc.power_cut.mode != "drop_random" && sc.power_cut.mode != "keep_all")
                rd.fail(*n, fmt::format("power_cut.mode must be drop_all, drop_random or keep_all, got \"{}\"", sc.power_cut.mode));
        }
        if (auto* n = t["seed"].node()) sc.power_cut.seed = static_cast<uint64_t>(rd.integer(*n, "power_cut.seed", 0, INT64_MAX));
        if (auto* n = t["share"].node()) {
            if (!n->is_number()) rd.fail(*n, "power_cut.share must be a number from 0 to 1");
            sc.power_cut.share = n->is_integer() ? static_cast<double>(n->as_integer()->get()) : n->as_floating_point()->get();
            if (!(sc.power_cut.share >= 0.0 && sc.power_cut.share <= 1.0)) rd.fail(*n, "power_cut.share must be from 0 to 1");
        }
        if (!sc.device.write_cache) rd.fail(t, "a power cut needs device.write_cache = true: without a volatile cache no write is ever lost");
    }
}

// [crash]: what the workload promises about its files, for `blkrig crash`.
// Needs [[steps]]: a promise names a file its write steps write.
void read_crash(const Reader& rd, const toml::table& root, Scenario& sc) {
    auto* cr = root["crash"].node();
    if (!cr) return;
    if (!cr->is_table()) rd.fail(*cr, "crash must be a table: [crash] or [[crash.promise]]");
    const auto& t = *cr->as_table();
    rd.only(t, "[crash]", {"promise", "check"});
    if (auto* ck = t["check"].node()) {
        const auto& ct = rd.table(*ck, "crash.check");
        rd.only(ct, "[crash.check]", {"boot", "torn"});
        if (auto* tn = ct["torn"].node()) {
            if (!tn->is_boolean()) rd.fail(*tn, "crash.check.torn must be true or false");
            sc.crash_torn = *tn->value<bool>();
        }
        if (auto* b = ct["boot"].node()) {
            sc.crash_boot = rd.str(*b, "crash.check.boot");
            sc.crash_boot_line = static_cast<int>(b->source().begin.line);
            if (sc.crash_boot != "none" && sc.crash_boot != "flushes" && sc.crash_boot != "all")
                rd.fail(*b, fmt::format("crash.check.boot = '{}': give \"none\", \"flushes\" (a guest boot on each epoch's flush state) or \"all\"",
                                        sc.crash_boot));
        }
    }
    auto* ps = t["promise"].node();
    if (!ps) return;
    if (!ps->is_array_of_tables()) rd.fail(*ps, "crash.promise must be tables: [[crash.promise]]");
    std::set<std::string> seen;
    for (auto& n : *ps->as_array()) {
        const auto& pt = *n.as_table();
        rd.only(pt, "[[crash.promise]]", {"path", "durable_after_step"});
        CrashPromise p;
        p.line = static_cast<int>(pt.source().begin.line);
        auto* path = pt["path"].node();
        auto* step = pt["durable_after_step"].node();
        if (!path || !step) rd.fail(pt, "[[crash.promise]] needs path (a file the steps write) and durable_after_step (the step after which it is durable)");
        p.path = rd.str(*path, "crash.promise.path");
        if (!seen.insert(p.path).second) rd.fail(*path, fmt::format("crash.promise.path '{}' is promised twice", p.path));
        p.durable_after_step = static_cast<int>(rd.integer(*step, "crash.promise.durable_after_step (a step index, from 0)", 0, 100000));
        if (p.durable_after_step >= static_cast<int>(sc.steps.size()))
            rd.fail(*step, fmt::format("crash.promise.durable_after_step = {} but the scenario has {} steps (0..{})", p.durable_after_step,
                                       sc.steps.size(), sc.steps.size() - 1));
        bool before = false;
        for (size_t i = 0; i < sc.steps.size(); ++i) {
            const auto& st = sc.steps[i];
            if (st.op == "rename" && st.args.value("path", "") == p.path)
                rd.fail(*path, fmt::format("crash.promise.path '{}': step {} renames it away; promise the name it gets instead", p.path, i));
            // A rename onto it (the rename-over pattern) gives it the source's content at once.
            if (st.op == "rename" && st.args.value("to", "") == p.path) {
                p.writes.push_back(i);
                before |= static_cast<int>(i) <= p.durable_after_step;
                continue;
            }
            if (st.op != "write" || st.args.value("path", "") != p.path) continue;
            if (st.args.value("append", false))
                rd.fail(*path, fmt::format("crash.promise.path '{}': step {} appends to it; a promise follows writes at an offset", p.path, i));
            p.writes.push_back(i);
            before |= static_cast<int>(i) <= p.durable_after_step;
        }
        if (!before)
            rd.fail(*path, fmt::format("crash.promise.path '{}': no write step with that path, and no rename onto it, at or before step {} (writes through fd= are not followed)",
                                       p.path, p.durable_after_step));
        sc.promises.push_back(std::move(p));
    }
}

}  // namespace

Scenario parse_scenario(std::string_view text, const std::string& file) {
    Reader rd(file);
    toml::table root = parse_toml(text, file);
    Scenario sc;
    sc.file = file;
    rd.only(root, "the scenario", {"scenario", "disk", "device", "guest", "steps", "faults", "expect", "power_cut", "crash"});
    // In this order: each table may check itself against the ones before.
    read_scenario(rd, root, sc);
    read_disk(rd, root, sc);
    read_device(rd, root, sc);
    read_guest(rd, root, sc);
    read_faults(rd, root, sc);
    read_steps(rd, root, sc);
    if (auto* ex = root["expect"].node()) sc.expects = expect_tables(rd, *ex);
    read_power_cut(rd, root, sc);
    read_crash(rd, root, sc);
    for (const auto& f : sc.faults)
        if (f.after_step >= static_cast<int>(sc.steps.size()) || f.until_step >= static_cast<int>(sc.steps.size()))
            throw ScenarioError(file, f.line, 1, fmt::format("faults.after_step/until_step {} but the scenario has {} steps (0..{})", std::max(f.after_step, f.until_step), sc.steps.size(), sc.steps.size() - 1));
    return sc;
}

std::vector<ExpectTable> parse_expect_file(std::string_view text, const std::string& file) {
    Reader rd(file);
    toml::table root = parse_toml(text, file);
    rd.only(root, "an expectations file", {"expect"});
    auto* ex = root["expect"].node();
    if (!ex) throw ScenarioError(file, 1, 1, "no [[expect]] tables");
    return expect_tables(rd, *ex);
}

Scenario load_scenario(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw ScenarioError(path, 0, 0, "cannot read the scenario file");
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_scenario(ss.str(), path);
}

uint64_t device_capacity_sectors(const Scenario& sc) {
    const uint64_t lbs = sc.device.logical_block_size;
    return sc.disk.size_bytes / lbs * lbs / 512 + kMarkerSectors;
}

nlohmann::json disk_json(const DiskSpec& d) {
    nlohmann::json j = {{"fs", d.fs}, {"size_bytes", d.size_bytes}, {"files", nlohmann::json::array()}};
    if (d.fat_bits) j["fat_bits"] = d.fat_bits;
    if (d.cluster_bytes) j["cluster_bytes"] = d.cluster_bytes;
    if (d.block_bytes) j["block_bytes"] = d.block_bytes;
    for (const auto& f : d.files) {
        nlohmann::json fj = {{"path", f.path}, {"size_bytes", f.size_bytes}, {"content", f.content}, {"seed", f.seed}, {"layout", f.layout}};
        if (f.layout == "fragmented") fj["extents"] = f.extents;
        if (!f.split_at.empty()) fj["split_at"] = f.split_at;
        if (!f.holes.empty()) fj["holes"] = f.holes;
        j["files"].push_back(fj);
    }
    return j;
}

}  // namespace blkrig::scenario
