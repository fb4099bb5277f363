// Parsing and checking disk specs. Everything that can be judged without
// building the image is judged here, so a bad spec fails before any tool runs.
#include "disk_image.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <set>

namespace blkrig::image {

std::string_view name(FsKind k) {
    switch (k) {
    case FsKind::vfat: return "vfat";
    case FsKind::exfat: return "exfat";
    case FsKind::ext4: return "ext4";
    case FsKind::ext2: return "ext2";
    case FsKind::raw: return "raw";
    }
    return "?";
}

std::string_view name(Content c) {
    switch (c) {
    case Content::random: return "random";
    case Content::zero: return "zero";
    case Content::pattern: return "pattern";
    }
    return "?";
}

std::string_view name(Layout l) {
    switch (l) {
    case Layout::contiguous: return "contiguous";
    case Layout::fragmented: return "fragmented";
    case Layout::sparse: return "sparse";
    }
    return "?";
}

namespace {

using json = nlohmann::json;

bool is_ext(FsKind fs) { return fs == FsKind::ext4 || fs == FsKind::ext2; }
bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

void check_keys(const json& obj, const std::string& where, std::initializer_list<std::string_view> known) {
    for (const auto& [key, value] : obj.items()) {
        if (std::find(known.begin(), known.end(), key) == known.end())
            throw SpecError(where.empty() ? key : where + "." + key, "unknown key");
    }
}

uint64_t get_uint(const json& v, const std::string& field) {
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
        throw SpecError(field, "must be a non-negative integer");
    return v.get<uint64_t>();
}

template <typename E, size_t N>
E get_enum(const json& v, const std::string& field, const std::pair<std::string_view, E> (&choices)[N]) {
    std::string all;
    for (const auto& [n, e] : choices) {
        if (v.is_string() && v.get<std::string>() == n) return e;
        all += all.empty() ? "" : ", ";
        all += n;
    }
    throw SpecError(field, fmt::format("must be one of {} (got {})", all, v.dump()));
}

// Names every tool here handles without quoting: no separators, wildcards or
// blanks, so the same path works for mtools, debugfs and the exFAT writer.
void check_path(const std::string& path, const std::string& field) {
    if (path.empty() || path[0] != '/') throw SpecError(field, "must be an absolute path starting with '/'");
    size_t start = 1;
    while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        std::string_view part(path.data() + start, end - start);
        if (part.empty() || part == "." || part == "..")
            throw SpecError(field, fmt::format("bad path component in '{}'", path));
        if (part.size() > 255) throw SpecError(field, "a path component is longer than 255 bytes");
        for (char c : part) {
            auto u = static_cast<unsigned char>(c);
            if (u <= 0x20 || u >= 0x7f || std::string_view("\\\"*?<>|:'`$").find(c) != std::string_view::npos)
                throw SpecError(field, fmt::format("'{}': use printable ASCII without blanks or \\\"*?<>|:'`$", path));
        }
        start = end + 1;
    }
}

FileSpec parse_file(const json& j, const DiskSpec& disk, size_t index) {
    const std::string at = fmt::format("files[{}]", index);
    if (!j.is_object()) throw SpecError(at, "must be an object");
    check_keys(j, at, {"path", "size_bytes", "content", "seed", "layout", "extents", "split_at", "holes"});
    FileSpec f;
    if (!j.contains("path") || !j["path"].is_string()) throw SpecError(at + ".path", "required string");
    f.path = j["path"].get<std::string>();
    check_path(f.path, at + ".path");
    if (!j.contains("size_bytes")) throw SpecError(at + ".size_bytes", "required");
    f.size_bytes = get_uint(j["size_bytes"], at + ".size_bytes");
    if (f.size_bytes > disk.size_bytes)
        throw SpecError(at + ".size_bytes",
                        fmt::format("{} bytes do not fit on a {}-byte disk", f.size_bytes, disk.size_bytes));
    if (j.contains("content"))
        f.content = get_enum(j["content"], at + ".content",
                             {std::pair{std::string_view("random"), Content::random}, {"zero", Content::zero},
                              {"pattern", Content::pattern}});
    if (j.contains("seed")) f.seed = get_uint(j["seed"], at + ".seed");
    if (j.contains("layout"))
        f.layout = get_enum(j["layout"], at + ".layout",
                            {std::pair{std::string_view("contiguous"), Layout::contiguous},
                             {"fragmented", Layout::fragmented}, {"sparse", Layout::sparse}});

    const bool fragmented = f.layout == Layout::fragmented;
    for (const char* key : {"extents", "split_at"}) {
        if (j.contains(key) && !fragmented) throw SpecError(at + "." + key, "only with layout \"fragmented\"");
    }
    if (j.contains("holes") && f.layout != Layout::sparse)
        throw SpecError(at + ".holes", "only with layout \"sparse\"");

    if (fragmented) {
        if (disk.fs != FsKind::vfat && disk.fs != FsKind::exfat && disk.fs != FsKind::ext4)
            throw SpecError(at + ".layout", "fragmented layout is supported on vfat, exfat and ext4");
        if (j.contains("split_at")) {
            const json& s = j["split_at"];
            if (!s.is_array()) throw SpecError(at + ".split_at", "must be an array of file offsets");
            uint64_t prev = 0;
            for (size_t k = 0; k < s.size(); ++k) {
                const std::string field = fmt::format("{}.split_at[{}]", at, k);
                uint64_t off = get_uint(s[k], field);
                if (off <= prev || off >= f.size_bytes)
                    throw SpecError(field, "offsets must increase and lie inside the file");
                f.split_at.push_back(off);
                prev = off;
            }
        }
        if (j.contains("extents")) {
            uint64_t n = get_uint(j["extents"], at + ".extents");
            if (n < 2) throw SpecError(at + ".extents", "must be at least 2 for a fragmented file");
            if (n > 100000) throw SpecError(at + ".extents", "at most 100000");
            if (!f.split_at.empty() && n != f.split_at.size() + 1)
                throw SpecError(at + ".extents", fmt::format("{} extents, but split_at makes {}", n,
                                                             f.split_at.size() + 1));
            f.extents = static_cast<unsigned>(n);
        } else if (!f.split_at.empty()) {
            f.extents = static_cast<unsigned>(f.split_at.size() + 1);
        } else {
            throw SpecError(at + ".extents", "required for a fragmented file (at least 2)");
        }
        if (f.size_bytes == 0) throw SpecError(at + ".size_bytes", "an empty file cannot be fragmented");
    }

    if (f.layout == Layout::sparse) {
        if (!is_ext(disk.fs)) throw SpecError(at + ".layout", "sparse files need ext4 or ext2");
        if (!j.contains("holes") || !j["holes"].is_array() || j["holes"].empty())
            throw SpecError(at + ".holes", "required: a non-empty array of [offset, length]");
        const uint64_t block = disk.block_bytes.value_or(4096);
        uint64_t end_prev = 0;
        for (size_t k = 0; k < j["holes"].size(); ++k) {
            const std::string field = fmt::format("{}.holes[{}]", at, k);
            const json& h = j["holes"][k];
            if (!h.is_array() || h.size() != 2) throw SpecError(field, "must be [offset, length]");
            Range r{get_uint(h[0], field), get_uint(h[1], field)};
            if (r.length == 0) throw SpecError(field, "length must be positive");
            if (r.offset > f.size_bytes || r.length > f.size_bytes - r.offset)
                throw SpecError(field, "reaches past the end of the file");
            if (k > 0 && r.offset < end_prev) throw SpecError(field, "holes must be sorted and not overlap");
            // The filesystem maps whole blocks: a hole must be whole blocks,
            // except that it may run to the end of the file.
            if (r.offset % block != 0 || (r.length % block != 0 && r.offset + r.length != f.size_bytes))
                throw SpecError(field, fmt::format("must start and end on a {}-byte block boundary (or end at "
                                                   "the end of the file)", block));
            f.holes.push_back(r);
            end_prev = r.offset + r.length;
        }
    }
    return f;
}

}  // namespace

DiskSpec parse_spec(const json& j) {
    if (!j.is_object()) throw SpecError("(spec)", "must be a JSON object");
    check_keys(j, "", {"fs", "size_bytes", "fat_bits", "cluster_bytes", "block_bytes", "files"});
    DiskSpec d;
    if (!j.contains("fs")) throw SpecError("fs", "required");
    d.fs = get_enum(j["fs"], "fs",
                    {std::pair{std::string_view("vfat"), FsKind::vfat}, {"exfat", FsKind::exfat},
                     {"ext4", FsKind::ext4}, {"ext2", FsKind::ext2}, {"raw", FsKind::raw}});
    if (!j.contains("size_bytes")) throw SpecError("size_bytes", "required");
    d.size_bytes = get_uint(j["size_bytes"], "size_bytes");
    if (d.size_bytes == 0 || d.size_bytes % kSectorBytes != 0)
        throw SpecError("size_bytes", "must be a positive multiple of 512");

    if (j.contains("fat_bits")) {
        if (d.fs != FsKind::vfat) throw SpecError("fat_bits", "only for fs \"vfat\"");
        uint64_t b = get_uint(j["fat_bits"], "fat_bits");
        if (b != 12 && b != 16 && b != 32) throw SpecError("fat_bits", "must be 12, 16 or 32");
        d.fat_bits = static_cast<unsigned>(b);
    }
    if (j.contains("cluster_bytes")) {
        if (d.fs != FsKind::vfat && d.fs != FsKind::exfat)
            throw SpecError("cluster_bytes", "only for fs \"vfat\" or \"exfat\"");
        uint64_t c = get_uint(j["cluster_bytes"], "cluster_bytes");
        const uint64_t max = d.fs == FsKind::vfat ? 65536 : 32 * 1024 * 1024;
        if (!is_pow2(c) || c < 512 || c > max)
            throw SpecError("cluster_bytes", fmt::format("must be a power of two from 512 to {}", max));
        d.cluster_bytes = static_cast<uint32_t>(c);
    }
    if (j.contains("block_bytes")) {
        if (!is_ext(d.fs)) throw SpecError("block_bytes", "only for fs \"ext4\" or \"ext2\"");
        uint64_t b = get_uint(j["block_bytes"], "block_bytes");
        if (b != 1024 && b != 2048 && b != 4096) throw SpecError("block_bytes", "must be 1024, 2048 or 4096");
        d.block_bytes = static_cast<uint32_t>(b);
    }

    if (j.contains("files")) {
        if (!j["files"].is_array()) throw SpecError("files", "must be an array");
        uint64_t total = 0;
        std::set<std::string> paths;
        // FAT and exFAT names match regardless of case.
        const bool fold = d.fs == FsKind::vfat || d.fs == FsKind::exfat;
        for (size_t k = 0; k < j["files"].size(); ++k) {
            FileSpec f = parse_file(j["files"][k], d, k);
            const std::string at = fmt::format("files[{}]", k);
            if (d.fs == FsKind::raw) {
                if (f.layout != Layout::contiguous)
                    throw SpecError(at + ".layout", "a raw disk holds contiguous files only");
                total = (total + 4095) / 4096 * 4096;  // raw files start on 4 KiB boundaries
            }
            total += f.size_bytes;
            if (total > d.size_bytes)
                throw SpecError(at + ".size_bytes", fmt::format("the files up to this one need {} bytes, the "
                                                                "disk has {}", total, d.size_bytes));
            // A file cannot also be a folder of another file.
            std::string key = f.path;
            if (fold) std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
            for (const auto& p : paths) {
                if (p == key) throw SpecError(at + ".path", fmt::format("'{}' is listed twice", f.path));
                auto is_under = [](const std::string& a, const std::string& b) {
                    return a.size() > b.size() && a.compare(0, b.size(), b) == 0 && a[b.size()] == '/';
                };
                if (is_under(p, key) || is_under(key, p))
                    throw SpecError(at + ".path", fmt::format("'{}' clashes with '{}'", f.path, p));
            }
            paths.insert(key);
            d.files.push_back(std::move(f));
        }
    }
    return d;
}

DiskSpec parse_spec_text(std::string_view text) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::parse_error& e) {
        throw SpecError("(spec)", fmt::format("not valid JSON: {}", e.what()));
    }
    return parse_spec(j);
}

}  // namespace blkrig::image
