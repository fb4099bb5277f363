// Shared by the disk_image tests: a temp folder, building from JSON text,
// the expected bytes of a file computed straight from the agent's generator
// (not through the library's ContentReader), and reading images back.
#pragma once

#include "agent_core/pattern.hpp"
#include "agent_core/sha256.hpp"
#include "agent_core/xxh128.hpp"
#include "disk_image.hpp"
#include "tool.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <stdexcept>
#include "common/temp_dir.hpp"

#include <string>
#include <vector>

namespace blkrig::image::test {

// The unit tests' temporary folder (qemu-device/tests/temp_dir.hpp).
using blkrig::TempDir;

inline std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::vector<uint8_t> to_bytes(const std::string& s) { return {s.begin(), s.end()}; }

inline std::string sha256_hex(const std::string& s) {
    agent::Sha256 h;
    h.update(s);
    return h.hex();
}

inline std::string xxh128_hex(const std::string& s) {
    agent::Xxh128 h;
    h.update(s);
    return h.hex();
}

// What the file must hold, from the spec's own definition.
inline std::vector<uint8_t> expected_content(const FileSpec& f) {
    std::vector<uint8_t> out(f.size_bytes);
    if (f.content == Content::pattern) {
        for (uint64_t i = 0; i < f.size_bytes; ++i) out[i] = static_cast<uint8_t>(((i / 512) & 0xff) ^ (i & 0xff));
    } else {
        pattern::Stream s(f.content == Content::zero ? pattern::Kind::zero : pattern::Kind::random, f.seed);
        s.fill(out.data(), out.size());
    }
    for (const Range& h : f.holes) std::fill_n(out.begin() + static_cast<ptrdiff_t>(h.offset), h.length, uint8_t{0});
    return out;
}

struct Built {
    DiskSpec spec;
    ImageReport report;
    std::string image;
};

inline Built build(const TempDir& dir, const std::string& json_text, const std::string& name = "disk.img") {
    Built b;
    b.spec = parse_spec_text(json_text);
    b.image = dir.file(name);
    b.report = build_image(b.spec, b.image);
    return b;
}

// Runs of clusters as mshowfat prints them: "::/f1.bin <2-9> <12> <14-15>".
inline std::vector<std::pair<uint32_t, uint32_t>> mshowfat_runs(const std::string& image, const std::string& path) {
    const ToolResult r = run_checked({"mshowfat", "-i", image, "::" + path});
    std::vector<std::pair<uint32_t, uint32_t>> runs;
    static const std::regex run(R"(<(\d+)(?:-(\d+))?>)");
    for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), run); it != std::sregex_iterator(); ++it) {
        const uint32_t first = static_cast<uint32_t>(std::stoul((*it)[1]));
        runs.emplace_back(first, (*it)[2].matched ? static_cast<uint32_t>(std::stoul((*it)[2])) : first);
    }
    return runs;
}

// The sector of cluster 2 and sectors per cluster, from minfo's reading of
// the boot sector (independent of our parser).
struct MinfoGeometry {
    uint64_t data_start = 0;
    uint64_t sectors_per_cluster = 0;
};

inline MinfoGeometry minfo_geometry(const std::string& image) {
    const std::string out = run_checked({"minfo", "-i", image, "::"}).out;
    auto field = [&](const std::string& re) -> uint64_t {
        std::smatch m;
        if (!std::regex_search(out, m, std::regex(re))) throw std::runtime_error("minfo: no " + re + " in " + out);
        return std::stoull(m[1]);
    };
    const uint64_t sector = field(R"(sector size: (\d+) bytes)");
    const uint64_t reserved = field(R"(reserved \(boot\) sectors: (\d+))");
    const uint64_t fats = field(R"(\nfats: (\d+))");
    uint64_t fat_len = field(R"(sectors per fat: (\d+))");
    if (fat_len == 0) fat_len = field(R"(Big fatlen=(\d+))");  // FAT32
    const uint64_t root_slots = field(R"(root directory slots: (\d+))");
    MinfoGeometry g;
    g.sectors_per_cluster = field(R"(cluster size: (\d+) sectors)") * sector / 512;
    g.data_start = (reserved + fats * fat_len + (root_slots * 32 + sector - 1) / sector) * sector / 512;
    return g;
}

}  // namespace blkrig::image::test
