#include "faults/rule.hpp"

#include "common/ops.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <vector>

namespace blkrig::faults {

// The bits are the op table's (common/ops.hpp).
static_assert(ops::find("read")->rule_bit == kOpRead && ops::find("write")->rule_bit == kOpWrite &&
              ops::find("flush")->rule_bit == kOpFlush && ops::find("discard")->rule_bit == kOpDiscard &&
              ops::find("write_zeroes")->rule_bit == kOpWriteZeroes && ops::kRuleOther == kOpOther && ops::kRuleAny == kOpAny);
static_assert(ops::action_name(static_cast<uint16_t>(ActionKind::torn)) == "torn" &&
              ops::action_name(static_cast<uint16_t>(ActionKind::crash)) == "crash" &&
              ops::action_name(static_cast<uint16_t>(ActionKind::lie)) == "lie");

uint8_t op_bit(uint32_t t) { return ops::rule_bit(t); }

const char* to_string(ActionKind k) { return ops::action_name(static_cast<uint16_t>(k)).value_or("?").data(); }

namespace {

// "read, write, flush, discard, write_zeroes": the ops a rule can name.
std::string rule_op_names() {
    std::string s;
    for (const auto& o : ops::kOps)
        if (o.rule_bit) s += (s.empty() ? "" : ", ") + std::string(o.name);
    return s;
}

struct Term {
    std::string_view key, value;
    size_t column;        // of the term
    size_t value_column;  // of its value
    bool has_value;
};

std::optional<uint64_t> u64(std::string_view s) {
    uint64_t v = 0;
    if (s.empty()) return std::nullopt;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
    return v;
}

// "50ms", "200us", "1s", "5000ns"
std::optional<uint64_t> duration_ns(std::string_view s) {
    static const std::pair<const char*, uint64_t> units[] = {{"ns", 1}, {"us", 1000}, {"ms", 1000000}, {"s", 1000000000}};
    for (const auto& [u, mult] : units) {
        const std::string_view us(u);
        if (s.size() > us.size() && s.substr(s.size() - us.size()) == us) {
            auto n = u64(s.substr(0, s.size() - us.size()));
            if (n && *n <= UINT64_MAX / mult) return *n * mult;
            return std::nullopt;
        }
    }
    return std::nullopt;
}

// "0x5a", "90"
std::optional<uint64_t> u64_or_hex(std::string_view s) {
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        uint64_t v = 0;
        auto r = std::from_chars(s.data() + 2, s.data() + s.size(), v, 16);
        if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
        return v;
    }
    return u64(s);
}

constexpr const char* kActions = "ioerr, unsupp, delay=DURATION, hold, reorder[=N], torn=SECTORS[:ok], corrupt=OFFSET[:MASK], lie or crash";
constexpr const char* kKeys = "op, sector, queue, nth, every, first, prob, seed, after_marker, until_marker, time, depth";

std::string duration_text(uint64_t ns) {
    if (ns % 1000000000 == 0) return fmt::format("{}s", ns / 1000000000);
    if (ns % 1000000 == 0) return fmt::format("{}ms", ns / 1000000);
    if (ns % 1000 == 0) return fmt::format("{}us", ns / 1000);
    return fmt::format("{}ns", ns);
}

}  // namespace

std::variant<Rule, RuleError> parse_rule(std::string_view text) {
    std::vector<Term> terms;
    size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
        if (i >= text.size()) break;
        const size_t start = i;
        while (i < text.size() && text[i] != ' ' && text[i] != '\t') ++i;
        const std::string_view word = text.substr(start, i - start);
        const size_t eq = word.find('=');
        Term t{word.substr(0, eq), eq == std::string_view::npos ? std::string_view{} : word.substr(eq + 1), start + 1,
               start + 1 + (eq == std::string_view::npos ? word.size() : eq + 1), eq != std::string_view::npos};
        terms.push_back(t);
    }
    if (terms.empty()) return RuleError{1, fmt::format("empty rule: expected an action ({})", kActions)};

    Rule r;
    auto err = [](size_t col, std::string msg) { return RuleError{col, std::move(msg)}; };
    const Term& a = terms[0];
    // Splits "A:B" of an action value; col is where B starts.
    auto split_colon = [&](std::string_view v) -> std::pair<std::string_view, std::optional<std::string_view>> {
        const size_t c = v.find(':');
        if (c == std::string_view::npos) return {v, std::nullopt};
        return {v.substr(0, c), v.substr(c + 1)};
    };
    if (a.key == "ioerr" && !a.has_value) r.action.kind = ActionKind::ioerr;
    else if (a.key == "unsupp" && !a.has_value) r.action.kind = ActionKind::unsupp;
    else if (a.key == "hold" && !a.has_value) r.action.kind = ActionKind::hold;
    else if (a.key == "lie" && !a.has_value) r.action.kind = ActionKind::lie;
    else if (a.key == "crash" && !a.has_value) r.action.kind = ActionKind::crash;
    else if (a.key == "delay") {
        // delay=50ms or delay=10ms..80ms (uniform, drawn from the rule's seed)
        const size_t dots = a.has_value ? a.value.find("..") : std::string_view::npos;
        auto d = a.has_value ? duration_ns(a.value.substr(0, dots)) : std::nullopt;
        if (!d || *d == 0) return err(a.value_column, "expected a duration after delay=, e.g. delay=50ms or delay=10ms..80ms (units ns, us, ms, s)");
        r.action = {ActionKind::delay, *d};
        if (dots != std::string_view::npos) {
            auto hi = duration_ns(a.value.substr(dots + 2));
            if (!hi) return err(a.value_column + dots + 2, "expected the longest delay after '..', e.g. delay=10ms..80ms");
            if (*hi <= *d) return err(a.value_column, "empty delay range: the longest delay must be greater than the shortest");
            r.action.delay_max_ns = *hi;
        }
    } else if (a.key == "reorder") {
        r.action.kind = ActionKind::reorder;
        r.action.count = 1;
        if (a.has_value) {
            auto n = u64(a.value);
            if (!n || *n == 0 || *n > 1024) return err(a.value_column, "expected reorder=N with N from 1 to 1024: the later requests to complete first");
            r.action.count = static_cast<uint32_t>(*n);
        }
    } else if (a.key == "torn") {
        auto [k, mode] = a.has_value ? split_colon(a.value) : std::pair<std::string_view, std::optional<std::string_view>>{};
        auto n = a.has_value ? u64(k) : std::nullopt;
        if (!n || *n > UINT32_MAX) return err(a.value_column, "expected torn=SECTORS (the sectors written before the tear), e.g. torn=8 or torn=8:ok");
        if (mode && *mode != "ok" && *mode != "ioerr")
            return err(a.value_column + k.size() + 1, fmt::format("expected ok or ioerr after torn={}:, got '{}'", k, *mode));
        r.action.kind = ActionKind::torn;
        r.action.count = static_cast<uint32_t>(*n);
        r.action.torn_ok = mode && *mode == "ok";
        r.ops = kOpWrite;
    } else if (a.key == "corrupt") {
        auto [off, mask] = a.has_value ? split_colon(a.value) : std::pair<std::string_view, std::optional<std::string_view>>{};
        auto o = a.has_value ? u64(off) : std::nullopt;
        if (!o) return err(a.value_column, "expected corrupt=OFFSET[:MASK] (a byte offset in the request's data), e.g. corrupt=0 or corrupt=4096:0x01");
        r.action.kind = ActionKind::corrupt;
        r.action.offset = *o;
        if (mask) {
            auto m = u64_or_hex(*mask);
            if (!m || *m == 0 || *m > 0xff) return err(a.value_column + off.size() + 1, "expected an XOR mask from 1 to 0xff after ':'");
            r.action.mask = static_cast<uint8_t>(*m);
        }
        r.ops = kOpRead | kOpWrite;
    } else {
        return err(a.column, fmt::format("expected an action ({}), got '{}'", kActions, a.key.empty() ? a.value : a.key));
    }

    // A key given twice would silently keep only its last value.
    std::vector<const Term*> seen;
    for (size_t k = 1; k < terms.size(); ++k) {
        const Term& t = terms[k];
        if (!t.has_value || t.value.empty())
            return err(t.column, fmt::format("expected key=value ({}), got '{}'", kKeys, t.key));
        for (const Term* s : seen)
            if (s->key == t.key)
                return err(t.column, t.key == "op" ? fmt::format("op= given twice (first at column {}): list several ops in one, e.g. op=read,write",
                                                                 s->column)
                                                   : fmt::format("{}= given twice (first at column {}): a rule has one {}=", t.key, s->column, t.key));
        seen.push_back(&t);
        if (t.key == "op") {
            r.ops = 0;
            size_t p = 0;
            while (p <= t.value.size()) {
                size_t c = t.value.find(',', p);
                if (c == std::string_view::npos) c = t.value.size();
                const std::string_view op = t.value.substr(p, c - p);
                const ops::Op* o = ops::find(op);
                if (o && o->rule_bit) r.ops |= o->rule_bit;
                else if (op == "any") r.ops |= kOpAny;
                else return err(t.value_column + p, fmt::format("expected an op ({}, any), got '{}'", rule_op_names(), op));
                p = c + 1;
            }
        } else if (t.key == "sector") {
            // A, A..B (inclusive) or A..
            const size_t dots = t.value.find("..");
            auto lo = u64(t.value.substr(0, dots));
            if (!lo) return err(t.value_column, "expected a sector number, e.g. sector=264 or sector=264..271 or sector=264..");
            r.first_sector = *lo;
            r.last_sector = *lo;
            if (dots != std::string_view::npos) {
                const std::string_view hi_s = t.value.substr(dots + 2);
                if (hi_s.empty()) r.last_sector = UINT64_MAX;
                else {
                    auto hi = u64(hi_s);
                    if (!hi) return err(t.value_column + dots + 2, "expected the last sector of the range after '..'");
                    if (*hi < *lo) return err(t.value_column, fmt::format("empty sector range {}..{}: the last sector is before the first", *lo, *hi));
                    r.last_sector = *hi;
                }
            }
        } else if (t.key == "queue") {
            auto q = u64(t.value);
            if (!q || *q > 0xffff) return err(t.value_column, "expected a queue index (0..65535)");
            r.queue = static_cast<uint16_t>(*q);
        } else if (t.key == "nth" || t.key == "every" || t.key == "first") {
            auto n = u64(t.value);
            if (!n || *n == 0) return err(t.value_column, fmt::format("expected a count of 1 or more after {}=", t.key));
            (t.key == "nth" ? r.nth : t.key == "every" ? r.every : r.first) = *n;
        } else if (t.key == "prob") {
            double p = -1;
            auto res = std::from_chars(t.value.data(), t.value.data() + t.value.size(), p);
            if (res.ec != std::errc() || res.ptr != t.value.data() + t.value.size() || !(p > 0.0 && p <= 1.0))
                return err(t.value_column, "expected a probability greater than 0 and at most 1, e.g. prob=0.1");
            r.probability = p;
        } else if (t.key == "after_marker" || t.key == "until_marker") {
            auto m = u64(t.value);
            if (!m || *m > UINT32_MAX) return err(t.value_column, fmt::format("expected a marker index after {}=", t.key));
            (t.key == "after_marker" ? r.after_marker : r.until_marker) = static_cast<int64_t>(*m);
        } else if (t.key == "seed") {
            auto s = u64(t.value);
            if (!s) return err(t.value_column, "expected a seed (an unsigned integer)");
            r.seed = *s;
        } else if (t.key == "time") {
            // A..B, A.. (durations since the device started)
            const size_t dots = t.value.find("..");
            if (dots == std::string_view::npos) return err(t.value_column, "expected a time window, e.g. time=2s..5s or time=500ms..");
            auto lo = duration_ns(t.value.substr(0, dots));
            if (!lo) return err(t.value_column, "expected a duration before '..', e.g. time=2s..5s (units ns, us, ms, s)");
            r.time_from_ns = *lo;
            if (dots + 2 < t.value.size()) {
                auto hi = duration_ns(t.value.substr(dots + 2));
                if (!hi) return err(t.value_column + dots + 2, "expected a duration after '..', e.g. time=2s..5s");
                if (*hi <= *lo) return err(t.value_column, "empty time window: the end must be after the start");
                r.time_to_ns = *hi;
            }
        } else if (t.key == "depth") {
            auto d = u64(t.value);
            if (!d || *d == 0 || *d > 65535) return err(t.value_column, "expected a queue depth from 1 to 65535 (the rule matches at that depth or more)");
            r.min_depth = static_cast<uint32_t>(*d);
        } else {
            return err(t.column, fmt::format("unknown key '{}' (known: {})", t.key, kKeys));
        }
    }
    if (r.action.kind == ActionKind::torn && (r.ops & ~kOpWrite))
        return err(1, "torn applies to writes only: use op=write (or leave op out)");
    if (r.action.kind == ActionKind::corrupt && (r.ops & ~(kOpRead | kOpWrite)))
        return err(1, "corrupt applies to reads and writes only: use op=read, op=write or op=read,write");
    if (r.action.kind == ActionKind::lie && (r.ops & ~(kOpWrite | kOpFlush | kOpDiscard | kOpWriteZeroes)))
        return err(1, "lie applies to requests that change the disk (write, flush, discard, write_zeroes): give op=");
    if ((r.nth != 0) + (r.every != 0) + (r.first != 0) > 1) return err(1, "give at most one of nth, every and first");
    if (r.until_marker >= 0 && r.until_marker <= r.after_marker)
        return err(1, fmt::format("until_marker={} is not after after_marker={}: the rule could never match", r.until_marker, r.after_marker));
    return r;
}

std::optional<std::string> never_fires(const Rule& r, uint64_t capacity_sectors, uint32_t num_queues) {
    if (r.first_sector >= capacity_sectors)
        return fmt::format("sector={} is past the device's last sector {} (it has {} sectors): the rule could never fire", r.first_sector,
                           capacity_sectors - 1, capacity_sectors);
    if (r.queue && *r.queue >= num_queues)
        return fmt::format("queue={} but the device has {} queue{} (0..{}): the rule could never fire", *r.queue, num_queues,
                           num_queues == 1 ? "" : "s", num_queues - 1);
    return std::nullopt;
}

std::string to_text(const Rule& r) {
    const Action& a = r.action;
    std::string s = to_string(a.kind);
    switch (a.kind) {
    case ActionKind::delay:
        s += "=" + duration_text(a.delay_ns);
        if (a.delay_max_ns) s += ".." + duration_text(a.delay_max_ns);
        break;
    case ActionKind::reorder: s += fmt::format("={}", a.count); break;
    case ActionKind::torn: s += fmt::format("={}:{}", a.count, a.torn_ok ? "ok" : "ioerr"); break;
    case ActionKind::corrupt: s += fmt::format("={}:{:#04x}", a.offset, a.mask); break;
    default: break;
    }
    if (r.ops != kOpAny) {
        std::string names;
        for (const auto& o : ops::kOps)
            if (o.rule_bit && (r.ops & o.rule_bit)) names += (names.empty() ? "" : ",") + std::string(o.name);
        s += " op=" + names;
    }
    if (r.first_sector != 0 || r.last_sector != UINT64_MAX) {
        s += fmt::format(" sector={}..", r.first_sector);
        if (r.last_sector != UINT64_MAX) s += std::to_string(r.last_sector);
    }
    if (r.queue) s += fmt::format(" queue={}", *r.queue);
    if (r.nth) s += fmt::format(" nth={}", r.nth);
    if (r.every) s += fmt::format(" every={}", r.every);
    if (r.first) s += fmt::format(" first={}", r.first);
    if (r.probability < 1.0) s += fmt::format(" prob={} seed={}", r.probability, r.seed);
    else if (r.seed) s += fmt::format(" seed={}", r.seed);
    if (r.after_marker >= 0) s += fmt::format(" after_marker={}", r.after_marker);
    if (r.until_marker >= 0) s += fmt::format(" until_marker={}", r.until_marker);
    if (r.time_from_ns != 0 || r.time_to_ns != UINT64_MAX) {
        s += " time=" + duration_text(r.time_from_ns) + "..";
        if (r.time_to_ns != UINT64_MAX) s += duration_text(r.time_to_ns);
    }
    if (r.min_depth > 1) s += fmt::format(" depth={}", r.min_depth);
    return s;
}

}  // namespace blkrig::faults
