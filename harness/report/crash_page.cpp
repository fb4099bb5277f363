#include "report/crash_page.hpp"

#include "folder/run_folder.hpp"
#include "report/html.hpp"

#include <fmt/format.h>

#include <fstream>
#include <map>
#include <sstream>

namespace blkrig::report {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {


std::string str(const json& j, const char* key) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return "";
    return it->is_string() ? it->get<std::string>() : it->dump();
}

// A state's one-line reason: as blkrig crash wrote it, else fsck's, the guest's, each broken promise.
std::string why_of(const json& s) {
    if (s.contains("why") && s["why"].is_string()) return s["why"].get<std::string>();
    std::string why;
    auto add = [&](const std::string& w) { why += (why.empty() ? "" : "; ") + w; };
    if (s.contains("fsck") && str(s["fsck"], "verdict") == "errors") add(str(s["fsck"], "command") + " found errors");
    if (s.contains("guest") && s["guest"].contains("why")) add("guest: " + str(s["guest"], "why"));
    if (s.contains("promises"))
        for (const auto& p : s["promises"])
            if (!p.value("held", true)) add("promise " + str(p, "path") + ": " + str(p, "why"));
    return why;
}

std::string promises_cell(const json& s) {
    std::string out;
    for (const auto& p : s.value("promises", json::array())) {
        const bool held = p.value("held", true), due = p.value("due", false);
        const std::string cls = held ? (due ? "durable" : "oldnew") : "broken";
        out += fmt::format("<span class=\"{}\">{} {}</span> ", cls, html_escape(str(p, "path")), held ? (due ? "durable" : "old-or-new") : "BROKEN");
    }
    return out.empty() ? "-" : out;
}

}  // namespace

std::string crash_page_html(const json& c, const std::string& record_report) {
    const json states = c.value("states", json::array());
    const size_t checked = c.value("states_checked", size_t{0}), bad = c.value("inconsistent", size_t{0});
    const bool complete = c.value("complete", false);
    std::string h;
    h += "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    h += fmt::format("<title>blkrig crash: {}</title>\n", html_escape(str(c, "scenario")));
    h += R"(<style>
body { font: 14px system-ui, sans-serif; margin: 24px; color: #111827; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.verdict-pass { color: #15803d; font-weight: 600; } .verdict-fail { color: #b91c1c; font-weight: 600; } .verdict-other { color: #92400e; font-weight: 600; }
table { border-collapse: collapse; } th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 10px; text-align: left; vertical-align: top; }
tr.bad td { background: #fef2f2; }
.durable { color: #15803d; } .oldnew { color: #374151; } .broken { color: #b91c1c; font-weight: 600; }
.epochs { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; align-items: center; }
.cells { display: flex; flex-wrap: wrap; gap: 2px; }
.cell { width: 10px; height: 10px; border-radius: 2px; background: #16a34a; display: inline-block; }
.cell.bad { background: #dc2626; } .cell.torn { opacity: 0.6; } .cell.booted { outline: 2px solid #1d4ed8; outline-offset: -1px; }
code { background: #f3f4f6; padding: 1px 4px; border-radius: 3px; }
.fail-item { margin: 10px 0; } .fail-item code { display: block; margin-top: 3px; white-space: pre-wrap; word-break: break-all; }
</style>
</head>
<body>
)";
    const std::string cls = !complete ? "verdict-other" : bad ? "verdict-fail" : "verdict-pass";
    const std::string verdict = !complete ? "not complete" : bad ? fmt::format("{} of {} states inconsistent", bad, checked)
                                                                  : fmt::format("all {} states consistent", checked);
    h += fmt::format("<h1>blkrig crash: {}</h1>\n", html_escape(str(c, "scenario")));
    h += fmt::format("<p id=\"verdict\" class=\"{}\">{}</p>\n", cls, html_escape(verdict));
    h += fmt::format("<p>{} on {}: {} writes in {} epochs; {} crash states possible, {} selected, {} checked. Guest boots: {}.",
                     html_escape(str(c, "filesystem")), html_escape(str(c, "record")), str(c, "writes"), str(c, "epochs"), html_escape(str(c, "states_possible")),
                     str(c, "states_selected"), checked, html_escape(c.value("boot", std::string("none"))));
    if (!record_report.empty()) h += fmt::format(" The recording run: <a href=\"{}\">its report</a>.", html_escape(record_report));
    h += "</p>\n";

    // Each epoch a row of cells, one per state: red inconsistent, outlined where a guest booted.
    std::map<size_t, std::string> rows;
    for (const auto& s : states) {
        const bool ok = s.value("consistent", false);
        std::string c2 = "cell";
        if (!ok) c2 += " bad";
        if (s.value("kind", std::string()) == "torn") c2 += " torn";
        if (s.contains("guest")) c2 += " booted";
        rows[s.value("epoch", size_t{0})] += fmt::format("<a href=\"#state-{0}\" class=\"{1}\" title=\"state {0} ({2})\"></a>", s.value("state", size_t{0}), c2,
                                                         html_escape(s.value("kind", std::string())));
    }
    h += "<h2>States by epoch</h2>\n<p>One square per checked state: green consistent, red not; outlined: a guest booted on it; faded: a torn write.</p>\n";
    h += "<div class=\"epochs\" id=\"epochs\">\n";
    for (const auto& [e, cells] : rows) h += fmt::format("<div>epoch {}</div><div class=\"cells\">{}</div>\n", e, cells);
    h += "</div>\n";

    h += fmt::format("<h2>Failing states ({})</h2>\n<div id=\"failing\">\n", bad);
    if (!bad) h += "<p>None.</p>\n";
    for (const auto& s : states) {
        if (s.value("consistent", true)) continue;
        h += fmt::format("<div class=\"fail-item\"><b>state {}</b> (epoch {}, {} of {} writes kept, {}): {}<code>{}</code>", str(s, "state"), str(s, "epoch"),
                         str(s, "kept"), str(s, "writes_in_epoch"), html_escape(str(s, "kind")), html_escape(why_of(s)), html_escape(str(s, "reproduce")));
        if (s.contains("guest")) h += fmt::format("<code>{}</code>", html_escape(str(s["guest"], "command")));
        h += "</div>\n";
    }
    h += "</div>\n";

    h += "<h2>Every state</h2>\n<table id=\"states\">\n<thead><tr><th>state</th><th>epoch</th><th>kept</th><th>kind</th><th>fsck</th><th>mount</th><th>promises</th></tr></thead>\n<tbody>\n";
    for (const auto& s : states) {
        const bool ok = s.value("consistent", false);
        h += fmt::format("<tr id=\"state-{}\"{}><td>{}</td><td>{}</td><td>{}{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n", str(s, "state"),
                         ok ? "" : " class=\"bad\"", str(s, "state"), str(s, "epoch"), str(s, "kept"), s.contains("torn") ? "+t" : "",
                         str(s, "writes_in_epoch"), html_escape(str(s, "kind")), html_escape(s.contains("fsck") ? str(s["fsck"], "verdict") : ""),
                         html_escape(s.contains("guest") ? str(s["guest"], "mount") : "-"), promises_cell(s));
    }
    h += "</tbody>\n</table>\n</body>\n</html>\n";
    return h;
}

std::string write_crash_report(const fs::path& crash_dir) noexcept {
    try {
        std::ifstream in(crash_dir / "crash.json");
        if (!in) return fmt::format("no {}", (crash_dir / "crash.json").string());
        std::stringstream ss;
        ss << in.rdbuf();
        const json c = json::parse(ss.str(), nullptr, false);
        if (!c.is_object()) return fmt::format("{} is not JSON", (crash_dir / "crash.json").string());
        std::string rec;
        if (c.contains("record") && c["record"].is_string()) {
            const fs::path r = fs::path(c["record"].get<std::string>()) / "report.html";
            std::error_code ec;
            if (fs::is_regular_file(r, ec)) rec = fs::absolute(r).lexically_normal().lexically_relative(fs::absolute(crash_dir).lexically_normal()).generic_string();
        }
        folder::write_atomic(crash_dir / "crash.html", crash_page_html(c, rec));
        return "";
    } catch (const std::exception& e) {
        return e.what();
    }
}

}  // namespace blkrig::report
