#include "readback.hpp"

#include "sys.hpp"

#include <algorithm>
#include <filesystem>
#include <sstream>

namespace blkrig::agent {

namespace fs = std::filesystem;

namespace {

// Every attribute a [device] or [guest] knob shows up in
// (docs/scenarios.md, "How each knob is read back").
const char* const kQueueFiles[] = {"scheduler",       "nomerges",          "read_ahead_kb",  "max_sectors_kb",
                                   "max_hw_sectors_kb", "rq_affinity",     "logical_block_size", "physical_block_size",
                                   "max_segments",    "max_segment_size",  "nr_requests",    "write_cache"};

bool read_into(std::vector<std::pair<std::string, std::string>>& out, const std::string& dir, const std::string& key) {
    try {
        out.emplace_back(key, trim(read_text(dir + key)));
        return true;
    } catch (const SysError&) {
        return false;
    }
}

}  // namespace

std::vector<std::pair<std::string, std::string>> read_disk_sysfs(const std::string& disk) {
    const std::string dir = "/sys/block/" + fs::path(disk).filename().string() + "/";
    std::vector<std::pair<std::string, std::string>> out;
    for (const char* f : kQueueFiles) read_into(out, dir, std::string("queue/") + f);
    read_into(out, dir, "ro");
    // One folder per hardware context, named by its index (the virtqueue's).
    std::vector<int> hctx;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir + "mq", ec)) {
        const std::string name = e.path().filename().string();
        if (!name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
            hctx.push_back(std::stoi(name));
    }
    std::sort(hctx.begin(), hctx.end());
    for (int h : hctx) {
        read_into(out, dir, "mq/" + std::to_string(h) + "/cpu_list");
        read_into(out, dir, "mq/" + std::to_string(h) + "/nr_tags");
    }
    return out;
}

std::string cpus_online() {
    try {
        return trim(read_text("/sys/devices/system/cpu/online"));
    } catch (const SysError&) {
        return "";
    }
}

std::optional<std::string> mount_options_of(const std::string& mountpoint) {
    std::string text;
    try {
        text = read_text("/proc/self/mounts");
    } catch (const SysError&) {
        return std::nullopt;
    }
    std::optional<std::string> found;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string source, target, type, options;
        if (f >> source >> target >> type >> options && target == mountpoint) found = options;
    }
    return found;
}

}  // namespace blkrig::agent
