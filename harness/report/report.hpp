// `blkrig report`: a run folder as one self-contained HTML page (the device's
// requests plotted sector against time with uPlot, histograms, the steps,
// the [[expect]] results and the findings), and an index page over several
// run folders. docs/report.md describes the page and how it scales.
#pragma once

#include "model/run_model.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace blkrig::report {

// Why no page was written; exit_code 2 for bad input (not a run folder),
// 3 for the rig itself (the plotting library is not installed).
struct ReportError : std::runtime_error {
    ReportError(int code, const std::string& what) : std::runtime_error(what), exit_code(code) {}
    int exit_code;
};

struct Options {
    // Holds report.js, report.css and node_modules/uplot/dist (npm ci).
    std::filesystem::path web_dir = default_web_dir();
    // Above this many requests the plot's points are thinned (docs/report.md).
    size_t max_points = 200000;

    static std::filesystem::path default_web_dir();  // $BLKRIG_SOURCE_DIR or the source tree's harness/report/web
};

// What the page's script reads: requests per plot mark, steps, bios,
// offenders, histograms and the tables. Pure given the run and verdict.json
// (null when the folder has none).
nlohmann::json page_data(const model::Run& run, const nlohmann::json& verdict, const Options& o = {});

// Reads the run folder and writes its page to out (RUN_DIR/report.html when
// empty), through a temporary file renamed into place. Returns the path.
std::filesystem::path write_report(const std::filesystem::path& run_dir, const std::filesystem::path& out = {}, const Options& o = {});

// The index over several run folders: each with its outcome and a link to
// its report (paths relative to the index's folder).
struct IndexEntry {
    std::filesystem::path run_dir, report;
    std::string name, outcome;
    size_t requests = 0;
};
void write_index(const std::vector<IndexEntry>& entries, const std::filesystem::path& out);

// `blkrig report RUN_DIR...`: one page per folder (out is that page for one
// folder, the index for several). Every folder is checked before anything is
// written. Returns what was written, the index last.
std::vector<std::filesystem::path> report(const std::vector<std::filesystem::path>& run_dirs, const std::filesystem::path& out = {},
                                          const Options& o = {});

// For the end of `blkrig run`: writes RUN_DIR/report.html; "" when fine,
// otherwise why not (never throws). loaded: the folder's model, if the run
// has loaded it already (the page is then drawn from it, not read again).
std::string write_run_report(const std::filesystem::path& run_dir, const model::Run* loaded = nullptr) noexcept;

}  // namespace blkrig::report
