// Bringing the guest up to where steps can run: filesystems, modules, the
// disk, its queue knobs. Each part is bounded in time; what it cannot do is
// Fatal (the run ends) or a note (the run goes on).
#pragma once

#include "report.hpp"
#include "agent_core/run_spec.hpp"
#include "sys.hpp"

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace blkrig::agent {

// proc, sysfs, devtmpfs on /dev, tracefs on /sys/kernel/tracing.
void mount_filesystems(Reporter& rep);

// /lib/modules/load-order, each from /lib/modules/<name>.ko (or .ko.xz,
// .ko.zst, .ko.gz, which the kernel decompresses). Returns the names loaded.
std::vector<std::string> load_modules(Reporter& rep);

RunSpec read_run_spec(const std::string& path);

// The raw disk, opened O_DIRECT for marker reads, once it appears.
UniqueFd wait_for_disk(const std::string& disk, std::chrono::milliseconds wait);

// Writes each knob to /sys/block/<disk>/queue/<key>, then reads them back.
std::vector<std::pair<std::string, std::string>> set_queue_knobs(const RunSpec& spec, Reporter& rep);

std::string kernel_release();

}  // namespace blkrig::agent
