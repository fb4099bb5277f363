#include "model/ftrace.hpp"

#include <charconv>
#include <sstream>

namespace blkrig::model {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

template <typename T>
bool num(std::string_view s, T& out) {
    const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

std::vector<std::string_view> words(std::string_view s) {
    std::vector<std::string_view> w;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && s[i] == ' ') ++i;
        size_t j = i;
        while (j < s.size() && s[j] != ' ') ++j;
        if (j > i) w.push_back(s.substr(i, j - i));
        i = j;
    }
    return w;
}

// Block events: "254,0 RA 2051 + 32 [dd]", "254,0 RA 16384 () 2051 + 32 [dd]",
// "254,0 RA () 2051 + 32 [0]", "254,0 R 2051 / 2307 [dd]", with fields newer
// kernels add in between ignored.
void parse_block(std::string_view body, nlohmann::json& ev) {
    const auto w = words(body);
    if (w.empty()) return;
    if (w[0].find(',') != std::string_view::npos) ev["dev"] = std::string(w[0]);
    if (w.size() > 1) ev["rwbs"] = std::string(w[1]);
    for (size_t i = 1; i + 2 < w.size(); ++i) {
        uint64_t a = 0, b = 0;
        if ((w[i + 1] == "+" || w[i + 1] == "/") && num(w[i], a) && num(w[i + 2], b)) {
            ev["sector"] = a;
            ev[w[i + 1] == "+" ? "nsect" : "new_sector"] = b;
            // rq_issue / rq_insert carry the byte count right after rwbs.
            uint64_t bytes = 0;
            if (i >= 3 && num(w[2], bytes)) ev["bytes"] = bytes;
            break;
        }
    }
    const auto& last = w.back();
    if (last.size() >= 2 && last.front() == '[' && last.back() == ']') {
        const auto inner = last.substr(1, last.size() - 2);
        int64_t err = 0;
        if (ev.value("event", "") == "block_rq_complete" && num(inner, err)) ev["error"] = err;
        else ev["comm"] = std::string(inner);
    }
}

}  // namespace

std::vector<nlohmann::json> parse_ftrace(std::string_view text) {
    std::vector<nlohmann::json> out;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string_view::npos) nl = text.size();
        const std::string_view line = text.substr(pos, nl - pos);
        pos = nl + 1;
        const std::string_view t = trim(line);
        if (t.empty() || t.front() == '#') continue;
        nlohmann::json ev;
        // "TASK-PID [CPU] FLAGS TIMESTAMP: rest"; TASK may contain spaces and dashes.
        const size_t lb = t.find(" [");
        const size_t rb = lb == std::string_view::npos ? lb : t.find(']', lb);
        const size_t colon = rb == std::string_view::npos ? rb : t.find(": ", rb);
        if (colon == std::string_view::npos) {
            out.push_back({{"event", "unparsed"}, {"raw", std::string(t)}});
            continue;
        }
        const std::string_view task_pid = trim(t.substr(0, lb));
        const size_t dash = task_pid.rfind('-');
        int pid = 0;
        if (dash != std::string_view::npos && num(task_pid.substr(dash + 1), pid)) {
            ev["task"] = std::string(task_pid.substr(0, dash));
            ev["pid"] = pid;
        }
        int cpu = 0;
        if (num(t.substr(lb + 2, rb - lb - 2), cpu)) ev["cpu"] = cpu;
        const auto mid = words(t.substr(rb + 1, colon - rb - 1));
        double ts = 0;
        if (!mid.empty()) {
            std::istringstream in{std::string(mid.back())};
            if (in >> ts) ev["ts"] = ts;
        }
        const std::string_view rest = trim(t.substr(colon + 2));
        const size_t c2 = rest.find(": ");
        const size_t arrow = rest.find(" <-");
        if (arrow != std::string_view::npos && (c2 == std::string_view::npos || arrow < c2)) {
            ev["event"] = "function";
            ev["function"] = std::string(trim(rest.substr(0, arrow)));
            ev["parent"] = std::string(trim(rest.substr(arrow + 3)));
        } else if (c2 != std::string_view::npos) {
            ev["event"] = std::string(rest.substr(0, c2));
            const std::string_view body = rest.substr(c2 + 2);
            if (ev["event"].get<std::string>().rfind("block_", 0) == 0) parse_block(body, ev);
            ev["raw"] = std::string(body);
        } else {
            ev["event"] = "unparsed";
            ev["raw"] = std::string(rest);
        }
        out.push_back(std::move(ev));
    }
    return out;
}

}  // namespace blkrig::model
