// `blkrig run` over a matrix: scenarios × kernels, each cell a `blkrig run`
// of its own in a child process with its own run folder, up to `jobs` at a
// time; progress on a terminal (or a line per finished run), a summary
// table, a JUnit file, and the worst exit code. Ctrl-C stops every run.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace blkrig::run {

struct Cell {
    std::string scenario_path;
    std::string name;      // the scenario's name (or file stem)
    std::string kernel;    // as given: catalogue name or path
    std::filesystem::path out;
    size_t steps = 0;
    std::string skip;      // why the cell is not run (empty: it runs)
};

struct MatrixOptions {
    std::vector<Cell> cells;
    unsigned jobs = 1;
    std::filesystem::path self;            // this program, run once per cell
    std::vector<std::string> run_args;     // options every cell's run gets
    std::filesystem::path junit;           // empty: none
    std::filesystem::path index;           // the report index over every run (empty: none)
    enum class Progress { tty, lines, quiet } progress = Progress::lines;
};

// One finished cell, as the summary, the JUnit file and the index read it.
struct CellResult {
    int exit_code = 3;         // the child's, 130 if interrupted, 0 for a skipped cell
    std::string outcome;       // pass | fail | error | interrupted | skipped
    double seconds = 0;
    uint64_t requests = 0;
    std::vector<std::string> problems;
};

// The worst of two exit codes: interrupted, then infrastructure, bad input, failed, passed.
int worst_exit(int a, int b);

// Runs the matrix; returns the worst exit code.
int run_matrix(const MatrixOptions& o);

// The JUnit XML of a finished matrix (pytest's junitxml layout): one testcase
// per cell, each step verdict and [[expect]] a property named "check: ...",
// failures with their message, the run folder a property.
std::string junit_xml(const std::vector<Cell>& cells, const std::vector<CellResult>& results);

}  // namespace blkrig::run
