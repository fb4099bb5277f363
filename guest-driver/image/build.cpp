// Building an image from a spec: each filesystem's builder (builders.hpp)
// places the files, then reads the layout back from the image (our FAT/exFAT
// parser, or debugfs for ext*) and refuses to return one that differs from
// what the spec asked for; then every file's bytes are checked here.
#include "builders.hpp"
#include "agent_core/sha256.hpp"
#include "agent_core/xxh128.hpp"
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

namespace blkrig::image {

namespace {

using namespace detail;

// The file's bytes as the image holds them (holes read as zeros) must be
// the spec's. Sets the file's SHA-256 and XXH3-128 (which reads are compared with).
void verify_content(std::span<const uint8_t> img, const FileSpec& f, FileExtents& fx) {
    agent::Sha256 got, want;
    agent::Xxh128 got_xxh;
    std::vector<uint8_t> zeros(1 << 20, 0);
    uint64_t pos = 0;
    auto zeros_until = [&](uint64_t end) {
        while (pos < end) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), end - pos));
            got.update(zeros.data(), n);
            got_xxh.update(zeros.data(), n);
            pos += n;
        }
    };
    for (const Extent& x : fx.extents) {
        if (x.file_offset < pos) throw FormatError(fmt::format("{}: extents overlap or are out of order", f.path));
        zeros_until(std::min(x.file_offset, f.size_bytes));
        const uint64_t end = std::min(x.file_offset + x.sectors * kSectorBytes, f.size_bytes);
        if (end <= pos) continue;
        const uint64_t src = x.sector * kSectorBytes;
        if (src > img.size() || end - x.file_offset > img.size() - src)
            throw FormatError(fmt::format("{}: an extent reaches past the image", f.path));
        got.update(img.data() + src, static_cast<size_t>(end - pos));
        got_xxh.update(img.data() + src, static_cast<size_t>(end - pos));
        pos = end;
    }
    zeros_until(f.size_bytes);

    ContentReader content(f.content, f.seed);
    std::vector<uint8_t> buf(1 << 20);
    for (uint64_t off = 0; off < f.size_bytes; off += buf.size()) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), f.size_bytes - off));
        content.read(off, std::span<uint8_t>(buf.data(), n));
        for (const Range& h : f.holes) {
            const uint64_t a = std::max(h.offset, off), b = std::min(h.offset + h.length, off + n);
            if (a < b) std::fill(buf.begin() + static_cast<ptrdiff_t>(a - off), buf.begin() + static_cast<ptrdiff_t>(b - off), 0);
        }
        want.update(buf.data(), n);
    }
    const std::string digest = want.hex();
    if (got.hex() != digest) throw ToolError(fmt::format("{}: the image holds other bytes than the spec asks for", f.path));
    fx.sha256 = digest;
    fx.xxh128 = got_xxh.hex();
}

}  // namespace

ImageReport build_image(const DiskSpec& spec, const fs::path& out) {
    const std::string img = out.string();
    try {
        create_sized(out, spec.size_bytes);
        const auto scratch = detail::scratch_dir();
        const TempDir& tmp = *scratch;
        ImageReport r;
        switch (spec.fs) {
        case FsKind::vfat: r = build_vfat(spec, img, tmp); break;
        case FsKind::exfat: r = build_exfat(spec, img); break;
        case FsKind::ext4:
        case FsKind::ext2: r = build_ext(spec, img, tmp); break;
        case FsKind::raw: r = build_raw(spec, img); break;
        }
        r.size_bytes = spec.size_bytes;
        MappedFile m(img, false);
        for (size_t i = 0; i < spec.files.size(); ++i)
            verify_content(m.bytes(), spec.files[i], r.files[i]);
        return r;
    } catch (...) {
        // Half an image is worse than none: nobody must boot it.
        std::error_code ec;
        fs::remove(out, ec);
        throw;
    }
}

nlohmann::json to_json(const ImageReport& r) {
    using nlohmann::json;
    const Geometry& g = r.geometry;
    json geo = {{"alloc_bytes", g.alloc_bytes}, {"fs_bytes", g.size_bytes}};
    if (g.fs == FsKind::vfat || g.fs == FsKind::exfat) {
        geo["cluster_bytes"] = g.alloc_bytes;
        geo["clusters"] = g.clusters;
        geo["fat_bits"] = g.fat_bits;
        geo["fats"] = g.fats;
        geo["fat_start_sector"] = g.fat_start_sector;
        geo["fat_sectors"] = g.fat_sectors;
        geo["root_dir_sector"] = g.root_dir_sector;
        geo["data_start_sector"] = g.data_start_sector;
    } else if (g.fs == FsKind::ext4 || g.fs == FsKind::ext2) {
        geo["block_bytes"] = g.alloc_bytes;
        geo["blocks"] = g.clusters;
    }
    json files = json::array();
    for (const auto& f : r.files) {
        json ex = json::array(), meta = json::array();
        for (const auto& x : f.extents)
            ex.push_back({{"file_offset", x.file_offset}, {"sector", x.sector}, {"sectors", x.sectors}});
        for (const auto& m : f.metadata) meta.push_back({{"kind", m.kind}, {"sector", m.sector}, {"sectors", m.sectors}});
        files.push_back(
            {{"path", f.path}, {"size_bytes", f.size_bytes}, {"sha256", f.sha256}, {"xxh128", f.xxh128}, {"extents", ex}, {"metadata", meta}});
    }
    return {{"fs", std::string(name(g.fs))},
            {"size_bytes", r.size_bytes},
            {"sector_bytes", kSectorBytes},
            {"geometry", geo},
            {"files", files}};
}

}  // namespace blkrig::image
