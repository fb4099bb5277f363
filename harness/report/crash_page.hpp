// The crash report's page: `blkrig crash`'s crash.json as one self-contained
// HTML page (OUT/crash.html): the verdict, each epoch's states as a row of
// squares, the failing states with the commands that reproduce them, and
// the table of every state. Static HTML, no script (docs/crash.md).
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace blkrig::report {

// Pure: the page for a crash.json; record_report, when not empty, is a
// link to the recording run's report.html.
std::string crash_page_html(const nlohmann::json& crash, const std::string& record_report);

// Writes CRASH_DIR/crash.html from CRASH_DIR/crash.json; "" when fine,
// otherwise why not (never throws).
std::string write_crash_report(const std::filesystem::path& crash_dir) noexcept;

}  // namespace blkrig::report
