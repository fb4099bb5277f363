#include "model/guest_events.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <charconv>
#include <cstring>

namespace blkrig::model {

Rwbs parse_rwbs(std::string_view s) {
    Rwbs r;
    auto is_op = [](char c) { return c == 'R' || c == 'W' || c == 'D' || c == 'F' || c == 'N'; };
    // "F" then an op letter is a preflush; "F" alone (or "FS") is a flush.
    if (s.size() >= 2 && s[0] == 'F' && is_op(s[1])) {
        r.preflush = true;
        s.remove_prefix(1);
    }
    if (s.empty()) return r;
    switch (s[0]) {
    case 'R': r.op = GuestOp::read; break;
    case 'W': r.op = GuestOp::write; break;
    case 'F': r.op = GuestOp::flush; break;
    case 'D':
        r.op = s.size() >= 2 && s[1] == 'E' ? GuestOp::secure_erase : GuestOp::discard;
        if (r.op == GuestOp::secure_erase) s.remove_prefix(1);
        break;
    case 'N': r.op = GuestOp::other; break;
    default: return r;
    }
    s.remove_prefix(1);
    r.fua = !s.empty() && s[0] == 'F';
    return r;
}

std::string_view GuestEvent::rwbs_view() const { return {rwbs, strnlen(rwbs, sizeof rwbs)}; }

uint32_t GuestEvents::intern(std::string_view s) {
    if (names.empty()) {
        names.emplace_back();
        ids_.emplace(names.back(), 0);
    }
    if (auto it = ids_.find(s); it != ids_.end()) return it->second;
    const auto id = static_cast<uint32_t>(names.size());
    names.emplace_back(s);
    ids_.emplace(names.back(), id);
    return id;
}

namespace {

GuestKind kind_of(std::string_view ev) {
    static const std::pair<std::string_view, GuestKind> kinds[] = {
        {"function", GuestKind::function},          {"block_bio_queue", GuestKind::bio_queue},
        {"block_bio_backmerge", GuestKind::bio_backmerge}, {"block_bio_frontmerge", GuestKind::bio_frontmerge},
        {"block_getrq", GuestKind::getrq},          {"block_rq_insert", GuestKind::rq_insert},
        {"block_rq_issue", GuestKind::rq_issue},    {"block_rq_requeue", GuestKind::rq_requeue},
        {"block_rq_complete", GuestKind::rq_complete}, {"block_split", GuestKind::split},
        {"block_plug", GuestKind::plug},            {"block_unplug", GuestKind::unplug},
        {"unparsed", GuestKind::unparsed},
    };
    for (const auto& [n, k] : kinds)
        if (n == ev) return k;
    return GuestKind::other;
}

// The fields the model keeps, as scanned from one line.
struct Fields {
    std::string_view event, function, rwbs, dev, raw;
    uint64_t sector = 0, nsect = 0, new_sector = 0;
    int64_t error = 0;
    int64_t cpu = -1;
    double ts = 0;
    bool has_sector = false, has_nsect = false;
};

template <typename T>
bool number(std::string_view s, T& out) {
    const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// Equality of short strings without a memcmp call (most keys are 2 to 10 bytes).
inline bool eq(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i]) return false;
    return true;
}

// Unsigned decimal; false for anything else (signs, exponents: the slow path takes those).
bool uint_fast(std::string_view v, uint64_t& out) {
    if (v.empty() || v.size() > 19) return false;
    uint64_t n = 0;
    for (char c : v) {
        if (c < '0' || c > '9') return false;
        n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    out = n;
    return true;
}

// "4.410094": ftrace's seconds with up to 9 decimals.
bool ts_fast(std::string_view v, double& out) {
    static constexpr double kScale[] = {1, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9};
    const size_t dot = v.find('.');
    uint64_t whole = 0, frac = 0;
    if (dot == std::string_view::npos) {
        if (!uint_fast(v, whole)) return false;
        out = static_cast<double>(whole);
        return true;
    }
    const auto f = v.substr(dot + 1);
    if (f.size() > 9 || !uint_fast(v.substr(0, dot), whole) || (!f.empty() && !uint_fast(f, frac))) return false;
    out = static_cast<double>(whole) + static_cast<double>(frac) * kScale[f.size()];
    return true;
}

// Scans a flat JSON object ({"k":v,...} with string, number, bool or null
// values, as nlohmann's dump() writes them). false: not flat, or something
// the fast path does not decode (an escape in a kept string, a signed or
// exponent number); the caller then uses nlohmann.
bool scan(std::string_view l, Fields& f) {
    const char* p = l.data();
    const char* const end = p + l.size();
    // nlohmann writes no whitespace: one inlined test for the usual case.
    auto ws = [&]() __attribute__((always_inline)) {
        if (p < end && static_cast<unsigned char>(*p) > ' ') return;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) ++p;
    };
    // The string starting at *p == '"'; escaped tells whether it held a
    // backslash. Long strings (raw) are searched with memchr; for the short
    // rest a plain loop, which also sees escapes, is cheaper than the call.
    auto str = [&](std::string_view& out, bool& escaped, bool long_string) {
        if (p >= end || *p != '"') return false;
        const char* const start = ++p;
        escaped = false;
        const char* q = p;
        if (!long_string) {
            for (;;) {
                while (q < end && *q != '"' && *q != '\\') ++q;
                if (q >= end) return false;
                if (*q == '"') break;
                escaped = true;
                if (end - q < 2) return false;
                q += 2;  // the backslash and what it escapes
            }
        } else {
            for (;;) {
                q = static_cast<const char*>(std::memchr(q, '"', static_cast<size_t>(end - q)));
                if (!q) return false;
                // An odd number of backslashes before the quote escapes it.
                const char* b = q;
                while (b > start && b[-1] == '\\') --b;
                if (b != q) escaped = true;
                if ((q - b) % 2 == 0) break;
                ++q;
            }
        }
        out = std::string_view(start, static_cast<size_t>(q - start));
        p = q + 1;
        return true;
    };
    ws();
    if (p >= end || *p != '{') return false;
    ++p;
    ws();
    if (p < end && *p == '}') return true;
    while (p < end) {
        std::string_view key;
        bool esc = false;
        ws();
        if (!str(key, esc, false)) return false;
        ws();
        if (p >= end || *p != ':') return false;
        ++p;
        ws();
        if (p >= end) return false;
        if (*p == '"') {
            std::string_view* dst = nullptr;
            switch (key.size()) {
            case 3: dst = eq(key, "dev") ? &f.dev : eq(key, "raw") ? &f.raw : nullptr; break;
            case 4: dst = eq(key, "rwbs") ? &f.rwbs : nullptr; break;
            case 5: dst = eq(key, "event") ? &f.event : nullptr; break;
            case 8: dst = eq(key, "function") ? &f.function : nullptr; break;
            default: break;
            }
            std::string_view v;
            if (!str(v, esc, dst == &f.raw)) return false;
            if (dst) {
                // Escapes are left to nlohmann; raw is only searched for LOST lines.
                if (esc && dst != &f.raw) return false;
                *dst = v;
            }
        } else if (*p == '{' || *p == '[') {
            return false;
        } else {
            const char* const start = p;
            while (p < end && *p != ',' && *p != '}' && *p != ' ') ++p;
            const std::string_view v(start, static_cast<size_t>(p - start));
            switch (key.size()) {
            case 2:
                if (eq(key, "ts") && !ts_fast(v, f.ts)) return false;
                break;
            case 3:
                if (eq(key, "cpu")) {
                    uint64_t u = 0;
                    if (!uint_fast(v, u)) return false;
                    f.cpu = static_cast<int64_t>(u);
                }
                break;
            case 5:
                if (eq(key, "nsect")) {
                    if (!uint_fast(v, f.nsect)) return false;
                    f.has_nsect = true;
                } else if (eq(key, "error")) {
                    uint64_t u = 0;
                    if (!v.empty() && v[0] == '-') {
                        if (!uint_fast(v.substr(1), u)) return false;
                        f.error = -static_cast<int64_t>(u);
                    } else {
                        if (!uint_fast(v, u)) return false;
                        f.error = static_cast<int64_t>(u);
                    }
                }
                break;
            case 6:
                if (eq(key, "sector")) {
                    if (!uint_fast(v, f.sector)) return false;
                    f.has_sector = true;
                }
                break;
            case 10:
                if (eq(key, "new_sector") && !uint_fast(v, f.new_sector)) return false;
                break;
            default: break;
            }
        }
        ws();
        if (p < end && *p == ',') {
            ++p;
            continue;
        }
        if (p < end && *p == '}') {
            ++p;
            ws();
            return p == end;
        }
        return false;
    }
    return false;
}

// The slow path: any JSON object, through nlohmann. Strings are copied into
// holder so Fields can point at them.
bool scan_json(std::string_view l, Fields& f, std::vector<std::string>& holder, std::string& why) {
    const auto j = nlohmann::json::parse(l, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        why = j.is_discarded() ? "not JSON" : "not a JSON object";
        return false;
    }
    holder.clear();
    holder.reserve(5);
    auto s = [&](const char* k, std::string_view& dst) {
        if (auto it = j.find(k); it != j.end() && it->is_string()) {
            holder.push_back(it->get<std::string>());
            dst = holder.back();
        }
    };
    s("event", f.event);
    s("function", f.function);
    s("rwbs", f.rwbs);
    s("dev", f.dev);
    s("raw", f.raw);
    auto u = [&](const char* k, uint64_t& dst, bool* has) {
        if (auto it = j.find(k); it != j.end() && it->is_number_unsigned()) {
            dst = it->get<uint64_t>();
            if (has) *has = true;
        }
    };
    u("sector", f.sector, &f.has_sector);
    u("nsect", f.nsect, &f.has_nsect);
    u("new_sector", f.new_sector, nullptr);
    if (auto it = j.find("error"); it != j.end() && it->is_number_integer()) f.error = it->get<int64_t>();
    if (auto it = j.find("cpu"); it != j.end() && it->is_number_unsigned()) f.cpu = it->get<int64_t>();
    if (auto it = j.find("ts"); it != j.end() && it->is_number()) f.ts = it->get<double>();
    return true;
}

// "CPU:0 [LOST 123 EVENTS]": ftrace's note that the ring buffer overran.
bool lost_line(std::string_view raw, uint64_t& n, bool& counted) {
    const size_t p = raw.find("[LOST ");
    if (p == std::string_view::npos) return false;
    std::string_view rest = raw.substr(p + 6);
    const size_t sp = rest.find(' ');
    counted = sp != std::string_view::npos && number(rest.substr(0, sp), n);
    return true;
}

}  // namespace

namespace {

// Recently seen names: nearly every line names one of a handful of events,
// devices and functions, so a small direct-mapped cache skips the hash lookup.
class NameCache {
public:
    uint32_t get(GuestEvents& g, std::string_view s) {
        const size_t h = (s.size() * 31 + (s.empty() ? 0 : static_cast<unsigned char>(s.back())) * 7 +
                          (s.size() > 6 ? static_cast<unsigned char>(s[6]) : 0)) & 63;
        Slot& slot = slots_[h];
        if (eq(slot.name, s)) return slot.id;
        slot.id = g.intern(s);
        slot.name = g.names[slot.id];  // the interned copy: s may point into a temporary
        return slot.id;
    }

private:
    struct Slot {
        std::string_view name;
        uint32_t id = 0;
    };
    Slot slots_[64];
};

}  // namespace

GuestEvents parse_guest_events(std::string_view text, uint64_t base_offset, size_t reserve_bytes) {
    GuestEvents g;
    g.intern("");
    // About 150 bytes a line in practice; reserving avoids regrowing a large vector.
    g.events.reserve(std::max(reserve_bytes, text.size()) / 120 + 16);
    std::vector<std::string> holder;
    std::vector<GuestKind> kinds;  // by name id
    NameCache cache;
    uint32_t line_no = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        const char* nl = static_cast<const char*>(std::memchr(text.data() + pos, '\n', text.size() - pos));
        const size_t end = nl ? static_cast<size_t>(nl - text.data()) : text.size();
        std::string_view line = text.substr(pos, end - pos);
        const size_t offset = pos;
        pos = end + 1;
        ++line_no;
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
        if (line.empty()) continue;
        Fields f;
        if (!scan(line, f)) {
            f = Fields{};
            std::string why;
            if (!scan_json(line, f, holder, why)) {
                if (g.bad_lines.size() < 5) g.bad_lines.emplace_back(line_no, std::move(why));
                ++g.bad_line_count;
                continue;
            }
        }
        GuestEvent e;
        e.ts = f.ts;
        e.offset = base_offset + offset;
        e.line = line_no;
        const uint32_t event_id = cache.get(g, f.event);
        if (kinds.size() <= event_id) kinds.resize(g.names.size(), GuestKind::other);
        if (kinds[event_id] == GuestKind::other) kinds[event_id] = kind_of(f.event);
        e.kind = kinds[event_id];
        e.name = e.kind == GuestKind::function ? cache.get(g, f.function) : event_id;
        if (!f.dev.empty()) e.dev = static_cast<uint16_t>(cache.get(g, f.dev));
        e.sector = f.sector;
        e.nsect = f.nsect;
        e.new_sector = f.new_sector;
        e.has_range = f.has_sector && f.has_nsect;
        e.error = static_cast<int16_t>(f.error);
        e.cpu = f.cpu >= 0 && f.cpu <= INT16_MAX ? static_cast<int16_t>(f.cpu) : -1;
        if (!f.rwbs.empty()) {
            std::memcpy(e.rwbs, f.rwbs.data(), std::min(f.rwbs.size(), sizeof e.rwbs - 1));
            const Rwbs r = parse_rwbs(f.rwbs);
            e.op = r.op;
            e.preflush = r.preflush;
        }
        if (e.kind == GuestKind::unparsed) {
            uint64_t n = 0;
            bool counted = false;
            if (lost_line(f.raw, n, counted)) {
                g.lost_events += n;
                g.lost_unknown = g.lost_unknown || !counted;
            }
        }
        g.events.push_back(e);
    }
    g.lines = line_no;
    return g;
}

void append(GuestEvents& into, GuestEvents&& more) {
    std::vector<uint32_t> id(more.names.size());
    for (size_t i = 0; i < more.names.size(); ++i) id[i] = into.intern(more.names[i]);
    into.events.reserve(into.events.size() + more.events.size());
    for (auto e : more.events) {
        e.name = id[e.name];
        e.dev = static_cast<uint16_t>(id[e.dev]);
        e.line += into.lines;
        into.events.push_back(e);
    }
    for (auto& [line, why] : more.bad_lines)
        if (into.bad_lines.size() < 5) into.bad_lines.emplace_back(line + into.lines, std::move(why));
    into.bad_line_count += more.bad_line_count;
    into.lost_events += more.lost_events;
    into.lost_unknown = into.lost_unknown || more.lost_unknown;
    into.lines += more.lines;
}

}  // namespace blkrig::model
