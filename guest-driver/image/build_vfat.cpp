// vfat images: mkfs.vfat, then mtools copies the files in, with spacer files making the fragments asked for.
#include "builders.hpp"
#include "agent_core/sha256.hpp"
#include "common/temp_dir.hpp"
#include "content.hpp"
#include "disk_image.hpp"
#include "exfat_writer.hpp"
#include "ext.hpp"
#include "fat.hpp"
#include "mapped_file.hpp"
#include "tool.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <regex>
#include <set>

namespace blkrig::image::detail {

namespace {

// mtools keeps FAT32's "next free cluster" hint in FSInfo and allocates from
// it; forgetting the hint makes it allocate from the first free cluster, so
// a file fills the holes made for it.
void forget_fat32_hint(const std::string& image) {
    MappedFile m(image, true);
    auto b = m.writable_bytes();
    const uint32_t sector = b[48] | (b[49] << 8);
    const uint64_t at = uint64_t(sector) * (b[11] | (b[12] << 8));
    if (sector == 0 || sector == 0xFFFF || at + 512 > b.size() || std::memcmp(&b[at], "RRaA", 4) != 0 ||
        std::memcmp(&b[at + 484], "rrAa", 4) != 0)
        throw FormatError("FAT32 without an FSInfo sector");
    std::memset(&b[at + 492], 0xFF, 4);
    m.sync();
}

}  // namespace

ImageReport build_vfat(const DiskSpec& spec, const std::string& img, const TempDir& tmp) {
    std::vector<std::string> mkfs = {"mkfs.vfat", "--invariant", "-S", "512"};
    if (spec.fat_bits) mkfs.insert(mkfs.end(), {"-F", std::to_string(*spec.fat_bits)});
    if (spec.cluster_bytes) mkfs.insert(mkfs.end(), {"-s", std::to_string(*spec.cluster_bytes / 512)});
    mkfs.push_back(img);
    try {
        run_checked(mkfs);
    } catch (const ToolError& e) {
        // The size, FAT type and cluster size do not go together.
        if (std::string_view(e.what()).find("clusters") != std::string_view::npos)
            throw SpecError(spec.cluster_bytes ? "cluster_bytes" : "fat_bits", e.what());
        throw;
    }

    FatVolume v;
    {
        MappedFile m(img, false);
        v = parse_fat_volume(m.bytes());
    }
    if (spec.fat_bits && v.bits != *spec.fat_bits)
        throw ToolError(fmt::format("mkfs.vfat made FAT{} instead of FAT{}", v.bits, *spec.fat_bits));
    // mkfs.vfat -F 32 also makes volumes with too few clusters for FAT32;
    // mtools then takes them for FAT16 and cannot write them.
    if (v.bits == 32 && v.clusters < 65525)
        throw SpecError(spec.cluster_bytes ? "cluster_bytes" : "fat_bits",
                        fmt::format("FAT32 needs at least 65525 clusters; {} bytes in {}-byte clusters give {}",
                                    spec.size_bytes, v.cluster_bytes, v.clusters));
    const uint64_t cs = v.cluster_bytes;
    auto mtool = [&](std::vector<std::string> args) {
        args.insert(args.begin() + 1, {"-i", img});
        run_checked(args);
    };

    // Names of our temporary files; a spec's file must not collide with them.
    static const std::regex reserved(R"(/BR[HS]\d{5}\.TMP)", std::regex::icase);
    for (size_t i = 0; i < spec.files.size(); ++i) {
        if (std::regex_match(spec.files[i].path, reserved))
            throw SpecError(fmt::format("files[{}].path", i), "names /BRHnnnnn.TMP and /BRSnnnnn.TMP are reserved on vfat");
    }
    const fs::path empty = tmp.path() / "empty", spacer = tmp.path() / "spacer", hole = tmp.path() / "hole";
    create_sized(empty, 0);
    create_sized(spacer, cs);
    std::set<std::string> made;
    std::vector<std::string> spacers;
    std::vector<std::vector<uint64_t>> plans;
    for (size_t i = 0; i < spec.files.size(); ++i) {
        const FileSpec& f = spec.files[i];
        for (const auto& dir : parents(f.path)) {
            if (made.insert(dir).second) mtool({"mmd", "::" + dir});
        }
        const fs::path staged = tmp.path() / fmt::format("f{}", i);
        stage_file(staged, f, 0);
        plans.push_back(plan_runs(f, i, cs, "cluster"));
        const auto& runs = plans.back();
        if (f.layout == Layout::fragmented) {
            // Make holes of the run sizes, each followed by a one-cluster
            // spacer, free the holes and copy the file in: it fills them in
            // order and ends after the last spacer. The spacers go at the
            // end, once no file can take their clusters any more. The entry
            // is made first so a growing folder cannot take a hole's cluster.
            mtool({"mcopy", "-m", empty.string(), "::" + f.path});
            std::vector<std::string> holes = {"mdel"};
            for (size_t k = 0; k + 1 < runs.size(); ++k) {
                create_sized(hole, runs[k] * cs);
                const size_t n = spacers.size() + 1;
                holes.push_back(fmt::format("::/BRH{:05}.TMP", n));
                spacers.push_back(fmt::format("::/BRS{:05}.TMP", n));
                mtool({"mcopy", hole.string(), holes.back()});
                mtool({"mcopy", spacer.string(), spacers.back()});
            }
            mtool(holes);
            if (v.bits == 32) forget_fat32_hint(img);
            mtool({"mcopy", "-m", "-D", "o", staged.string(), "::" + f.path});
        } else {
            mtool({"mcopy", "-m", staged.string(), "::" + f.path});
        }
        fs::remove(staged);
        MappedFile m(img, false);
        check_layout(f, fat_file_extents(m.bytes(), f.path), cs, runs);
    }
    if (!spacers.empty()) {
        spacers.insert(spacers.begin(), "mdel");
        mtool(spacers);
    }
    run_checked({"fsck.fat", "-n", img});

    ImageReport r;
    MappedFile m(img, false);
    r.geometry = fat_geometry(v);
    for (size_t i = 0; i < spec.files.size(); ++i) {
        r.files.push_back(fat_file_extents(m.bytes(), spec.files[i].path));
        check_layout(spec.files[i], r.files.back(), cs, plans[i]);
    }
    return r;
}

}  // namespace blkrig::image::detail
