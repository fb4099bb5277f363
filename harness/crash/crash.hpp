// `blkrig crash`: every crash state a recorded run's write log allows (or a
// chosen share of them), each built on the host from the disk before the
// run and the logged writes, and checked there: the filesystem's own fsck,
// and each [[crash.promise]] of the scenario against the files' bytes
// (docs/crash.md).
#pragma once

#include "crash/states.hpp"
#include "scenario/scenario.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace blkrig::crash {

struct CrashOptions {
    std::filesystem::path out;     // crash.json, crash.txt; with --only also the state's disk.img and extents.json
    std::filesystem::path record;  // a run folder of `blkrig run --record-writes`
    Selection sel;
    unsigned jobs = 1;
    std::optional<size_t> only;    // build and check this state alone, and keep its disk
    std::string rerun;             // the command line that recreates this enumeration, for the reproduce lines
    // Which states also get a guest boot (mount, read each promised file):
    // "none", "flushes", "all"; empty: the scenario's [crash.check] boot, else none.
    std::string boot;
    std::filesystem::path blkrig;  // the executable the boots run
    std::string kernel;            // for the boots; empty: the scenario's
};

struct CrashResult {
    int exit = 3;  // 0 every state checked consistent, 1 some not, 2 bad input, 3 the rig failed, 130 interrupted
    std::string summary;
};

CrashResult check_states(const scenario::Scenario& sc, const CrashOptions& o);

}  // namespace blkrig::crash
