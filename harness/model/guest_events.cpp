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
    double ts = 0;
    bool has_sector = false, has_nsect = false;
};

template <typename T>
bool number(std::string_view s, T& out) {
    const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// Scans a flat JSON object ({"k":v,...} with string, number, bool or null
// values, as nlohmann's dump() writes them). false: not flat or a string
// with an escape in a field we keep; the caller then uses nlohmann.
bool scan(std::string_view l, Fields& f) {
    size_t i = 0;
    auto ws = [&] {
        while (i < l.size() && (l[i] == ' ' || l[i] == '\t' || l[i] == '\r')) ++i;
    };
    // A string starting at l[i] == '"'; sets out to its raw content, escaped tells whether it had a backslash.
    auto str = [&](std::string_view& out, bool& escaped) {
        if (i >= l.size() || l[i] != '"') return false;
        const size_t start = ++i;
        escaped = false;
        while (i < l.size()) {
            const char* q = static_cast<const char*>(std::memchr(l.data() + i, '"', l.size() - i));
            if (!q) return false;
            size_t end = static_cast<size_t>(q - l.data());
            // Count the backslashes before the quote: an odd number escapes it.
            size_t bs = 0;
            while (end - bs > start && l[end - bs - 1] == '\\') ++bs;
            if (std::memchr(l.data() + i, '\\', end - i)) escaped = true;
            i = end + 1;
            if (bs % 2 == 0) {
                out = l.substr(start, end - start);
                return true;
            }
        }
        return false;
    };
    ws();
    if (i >= l.size() || l[i] != '{') return false;
    ++i;
    ws();
    if (i < l.size() && l[i] == '}') return true;
    while (i < l.size()) {
        std::string_view key;
        bool esc = false;
        ws();
        if (!str(key, esc)) return false;
        ws();
        if (i >= l.size() || l[i] != ':') return false;
        ++i;
        ws();
        if (i >= l.size()) return false;
        if (l[i] == '"') {
            std::string_view v;
            if (!str(v, esc)) return false;
            std::string_view* dst = key == "event" ? &f.event : key == "function" ? &f.function : key == "rwbs" ? &f.rwbs
                                  : key == "dev" ? &f.dev : key == "raw" ? &f.raw : nullptr;
            if (dst) {
                // raw is only looked at for LOST lines; an escape there does not matter.
                if (esc && dst != &f.raw) return false;
                *dst = v;
            }
        } else if (l[i] == '{' || l[i] == '[') {
            return false;
        } else {
            const size_t start = i;
            while (i < l.size() && l[i] != ',' && l[i] != '}' && l[i] != ' ') ++i;
            const std::string_view v = l.substr(start, i - start);
            if (key == "ts") {
                if (!number(v, f.ts)) return false;
            } else if (key == "sector") {
                if (!number(v, f.sector)) return false;
                f.has_sector = true;
            } else if (key == "nsect") {
                if (!number(v, f.nsect)) return false;
                f.has_nsect = true;
            } else if (key == "new_sector") {
                if (!number(v, f.new_sector)) return false;
            } else if (key == "error") {
                if (!number(v, f.error)) return false;
            }
        }
        ws();
        if (i < l.size() && l[i] == ',') {
            ++i;
            continue;
        }
        if (i < l.size() && l[i] == '}') {
            ++i;
            ws();
            return i == l.size();
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

GuestEvents parse_guest_events(std::string_view text) {
    GuestEvents g;
    g.intern("");
    // About 150 bytes a line in practice; reserving avoids regrowing a large vector.
    g.events.reserve(text.size() / 120 + 16);
    std::vector<std::string> holder;
    uint32_t line_no = 0;
    size_t pos = 0;
    // The last interned names, to skip the hash lookup for repeats (most lines repeat their neighbours').
    std::string_view last_event, last_dev, last_fn;
    uint32_t last_event_id = 0, last_dev_id = 0, last_fn_id = 0;
    GuestKind last_kind = GuestKind::other;
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
                if (g.bad_lines.size() < 5) g.bad_lines.push_back(fmt::format("line {}: {}", line_no, why));
                ++g.bad_line_count;
                continue;
            }
        }
        GuestEvent e;
        e.ts = f.ts;
        e.offset = offset;
        e.line = line_no;
        if (f.event != last_event || last_event.empty()) {
            last_event = f.event;
            last_kind = kind_of(f.event);
            last_event_id = g.intern(f.event);
        }
        e.kind = last_kind;
        if (e.kind == GuestKind::function) {
            if (f.function != last_fn || last_fn.empty()) {
                last_fn = f.function;
                last_fn_id = g.intern(f.function);
            }
            e.name = last_fn_id;
        } else {
            e.name = last_event_id;
        }
        if (!f.dev.empty()) {
            if (f.dev != last_dev) {
                last_dev = f.dev;
                last_dev_id = g.intern(f.dev);
            }
            e.dev = static_cast<uint16_t>(last_dev_id);
        }
        e.sector = f.sector;
        e.nsect = f.nsect;
        e.new_sector = f.new_sector;
        e.has_range = f.has_sector && f.has_nsect;
        e.error = static_cast<int16_t>(f.error);
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
        // Interned views point into the text or holder; keep them stable by
        // pointing at the interned copies instead.
        last_event = g.names[last_event_id];
        if (e.kind == GuestKind::function) last_fn = g.names[last_fn_id];
        if (e.dev) last_dev = g.names[last_dev_id];
        g.events.push_back(e);
    }
    return g;
}

}  // namespace blkrig::model
