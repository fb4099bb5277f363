// Building an image from a spec, one function per filesystem. Each builder
// places the files, then reads the layout back from the image (our FAT/exFAT
// parser, or debugfs for ext*) and refuses to return one that differs from
// what the spec asked for.
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

namespace blkrig::image {

namespace {

namespace fs = std::filesystem;

constexpr time_t kFixedMtime = 1704067200;  // 2024-01-01T00:00:00Z: same inputs, same image
constexpr const char* kFixedUuid = "b1c0b1c0-0000-4000-8000-000000000001";

// A scratch folder for the staged files, made through the common TempDir.
std::unique_ptr<TempDir> scratch_dir() {
    try {
        return std::make_unique<TempDir>("blkrig-mkdisk-");
    } catch (const std::system_error& e) {
        throw ToolError(e.what());
    }
}

class Fd {
public:
    Fd(const fs::path& p, int flags) : fd_(::open(p.c_str(), flags | O_CLOEXEC, 0644)) {
        if (fd_ < 0) throw ToolError(fmt::format("open {}: {}", p.string(), std::strerror(errno)));
    }
    ~Fd() { ::close(fd_); }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

void pwrite_all(int fd, const uint8_t* p, size_t n, uint64_t off) {
    while (n > 0) {
        ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
        if (w < 0) {
            if (errno == EINTR) continue;
            throw ToolError(fmt::format("pwrite: {}", std::strerror(errno)));
        }
        p += w;
        n -= static_cast<size_t>(w);
        off += static_cast<uint64_t>(w);
    }
}

void create_sized(const fs::path& p, uint64_t size) {
    Fd fd(p, O_WRONLY | O_CREAT | O_TRUNC);
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
        throw ToolError(fmt::format("truncate {}: {}", p.string(), std::strerror(errno)));
}

bool in_hole(const FileSpec& f, uint64_t off) {
    return std::any_of(f.holes.begin(), f.holes.end(),
                       [&](const Range& h) { return off >= h.offset && off < h.offset + h.length; });
}

// Writes the file for a tool to copy in: holes are left unwritten (the
// staging file is sparse there). With avoid_zero_blocks set, a data block
// that would be all zero is written as 0xA5 instead, because mke2fs -d and
// debugfs write turn all-zero blocks into holes; the true bytes go into the
// image afterwards (write_content).
void stage_file(const fs::path& dst, const FileSpec& f, uint32_t avoid_zero_blocks) {
    Fd fd(dst, O_WRONLY | O_CREAT | O_TRUNC);
    if (::ftruncate(fd.get(), static_cast<off_t>(f.size_bytes)) != 0)
        throw ToolError(fmt::format("truncate {}: {}", dst.string(), std::strerror(errno)));
    ContentReader content(f.content, f.seed);
    const uint64_t block = avoid_zero_blocks ? avoid_zero_blocks : 4096;
    std::vector<uint8_t> buf(1 << 20);  // a multiple of every block size
    for (uint64_t off = 0; off < f.size_bytes; off += buf.size()) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), f.size_bytes - off));
        content.read(off, std::span<uint8_t>(buf.data(), n));
        // Write runs of data blocks, skipping holes.
        size_t run_start = 0;
        bool in_run = false;
        for (size_t b = 0; b < n; b += block) {
            const size_t len = std::min<size_t>(block, n - b);
            const bool data = !in_hole(f, off + b);
            auto first = buf.begin() + static_cast<ptrdiff_t>(b);
            if (data && avoid_zero_blocks && std::all_of(first, first + static_cast<ptrdiff_t>(len), [](uint8_t x) { return x == 0; }))
                std::fill_n(first, len, uint8_t{0xA5});
            if (data && !in_run) {
                run_start = b;
                in_run = true;
            } else if (!data && in_run) {
                pwrite_all(fd.get(), buf.data() + run_start, b - run_start, off + run_start);
                in_run = false;
            }
        }
        if (in_run) pwrite_all(fd.get(), buf.data() + run_start, n - run_start, off + run_start);
    }
    const timespec times[2] = {{kFixedMtime, 0}, {kFixedMtime, 0}};
    ::futimens(fd.get(), times);
}

// Writes the file's true bytes through its extents (whole extents are
// allocated to it, so nothing else is touched).
void write_content(int image_fd, const FileSpec& f, const FileExtents& fx) {
    ContentReader content(f.content, f.seed);
    std::vector<uint8_t> buf(1 << 20);
    for (const Extent& x : fx.extents) {
        const uint64_t end = std::min(x.file_offset + x.sectors * kSectorBytes, f.size_bytes);
        for (uint64_t off = x.file_offset; off < end; off += buf.size()) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - off));
            content.read(off, std::span<uint8_t>(buf.data(), n));
            pwrite_all(image_fd, buf.data(), n, x.sector * kSectorBytes + (off - x.file_offset));
        }
    }
}

// The run lengths, in allocation units, that file `index` is to be split into.
std::vector<uint64_t> plan_runs(const FileSpec& f, size_t index, uint64_t unit, std::string_view unit_name) {
    const uint64_t units = (f.size_bytes + unit - 1) / unit;
    if (units == 0) return {};
    if (f.layout != Layout::fragmented) return {units};
    std::vector<uint64_t> runs;
    if (!f.split_at.empty()) {
        uint64_t prev = 0;
        for (size_t k = 0; k < f.split_at.size(); ++k) {
            if (f.split_at[k] % unit != 0)
                throw SpecError(fmt::format("files[{}].split_at[{}]", index, k),
                                fmt::format("{} is not a multiple of the {}-byte {}", f.split_at[k], unit, unit_name));
            runs.push_back(f.split_at[k] / unit - prev);
            prev = f.split_at[k] / unit;
        }
        runs.push_back(units - prev);
        return runs;
    }
    if (units < f.extents)
        throw SpecError(fmt::format("files[{}].extents", index),
                        fmt::format("{} extents need at least {} {}s of {} bytes; the file has {}", f.extents,
                                    f.extents, unit_name, unit, units));
    const uint64_t each = units / f.extents;
    runs.assign(f.extents - 1, each);
    runs.push_back(units - each * (f.extents - 1));
    return runs;
}

std::string describe(const FileExtents& fx) {
    std::string s;
    for (const auto& x : fx.extents)
        s += fmt::format("{}[file {} -> sector {} +{}]", s.empty() ? "" : " ", x.file_offset, x.sector, x.sectors);
    for (const auto& m : fx.metadata) s += fmt::format(" [{} sector {} +{}]", m.kind, m.sector, m.sectors);
    return s.empty() ? "no extents" : s;
}

// The layout read back from the image must be the one asked for.
void check_layout(const FileSpec& f, const FileExtents& fx, uint64_t unit, const std::vector<uint64_t>& runs) {
    auto fail = [&](const std::string& why) {
        throw ToolError(fmt::format("{}: {} (got {})", f.path, why, describe(fx)));
    };
    if (fx.size_bytes != f.size_bytes) fail(fmt::format("size {} instead of {}", fx.size_bytes, f.size_bytes));
    const uint64_t units = (f.size_bytes + unit - 1) / unit;
    // The last run may stop short of its allocation unit (FAT lists sectors).
    auto units_of = [&](const Extent& x) { return (x.sectors * kSectorBytes + unit - 1) / unit; };
    uint64_t mapped = 0;
    for (const auto& x : fx.extents) mapped += units_of(x);

    switch (f.layout) {
    case Layout::contiguous: {
        if (mapped != units) fail(fmt::format("{} allocation units mapped, {} expected", mapped, units));
        if (units == 0) break;
        // With ext2's indirect blocks between the data, "contiguous" means
        // data and mapping blocks form one unbroken run.
        std::vector<std::pair<uint64_t, uint64_t>> all;
        for (const auto& x : fx.extents) all.emplace_back(x.sector, x.sectors);
        for (const auto& m : fx.metadata) all.emplace_back(m.sector, m.sectors);
        std::sort(all.begin(), all.end());
        for (size_t k = 1; k < all.size(); ++k) {
            if (all[k - 1].first + all[k - 1].second != all[k].first)
                fail("placed in more than one extent (the filesystem's own metadata was in the way: try a smaller "
                     "file or a larger block size)");
        }
        break;
    }
    case Layout::fragmented: {
        // ext4 may list a long run as several adjacent extents: count runs.
        std::vector<Extent> joined;
        for (const auto& x : fx.extents) {
            if (!joined.empty() && joined.back().file_offset + joined.back().sectors * kSectorBytes == x.file_offset &&
                joined.back().sector + joined.back().sectors == x.sector)
                joined.back().sectors += x.sectors;
            else
                joined.push_back(x);
        }
        if (joined.size() != runs.size())
            fail(fmt::format("{} extents wanted, the filesystem gave {}", runs.size(), joined.size()));
        uint64_t off = 0;
        for (size_t k = 0; k < runs.size(); ++k) {
            if (joined[k].file_offset != off || units_of(joined[k]) != runs[k])
                fail(fmt::format("extent {} should start at file offset {} and span {} bytes", k + 1, off, runs[k] * unit));
            off += runs[k] * unit;
        }
        break;
    }
    case Layout::sparse: {
        // Exactly the blocks outside the holes are mapped.
        for (uint64_t b = 0; b < units; ++b) {
            const uint64_t off = b * unit;
            const bool want = !in_hole(f, off);
            const bool have = std::any_of(fx.extents.begin(), fx.extents.end(), [&](const Extent& x) {
                return off >= x.file_offset && off < x.file_offset + x.sectors * kSectorBytes;
            });
            if (want != have)
                fail(fmt::format("block at file offset {} is {} but should be {}", off, have ? "mapped" : "a hole",
                                 want ? "mapped" : "a hole"));
        }
        break;
    }
    }
}

std::vector<std::string> parents(const std::string& path) {
    std::vector<std::string> out;
    for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1))
        out.push_back(path.substr(0, pos));
    return out;
}

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

ImageReport build_exfat(const DiskSpec& spec, const std::string& img) {
    std::vector<std::string> mkfs = {"mkfs.exfat"};
    if (spec.cluster_bytes) mkfs.insert(mkfs.end(), {"-c", std::to_string(*spec.cluster_bytes)});
    mkfs.push_back(img);
    run_checked(mkfs);

    std::vector<std::vector<uint64_t>> plans;
    {
        MappedFile m(img, true);
        ExfatWriter w(m.writable_bytes());
        for (size_t i = 0; i < spec.files.size(); ++i) {
            const FileSpec& f = spec.files[i];
            const auto dirs = parents(f.path);
            if (!dirs.empty()) w.mkdirs(dirs.back());
            plans.push_back(plan_runs(f, i, w.volume().cluster_bytes, "cluster"));
            ContentReader content(f.content, f.seed);
            w.add_file(f.path, f.size_bytes, plans.back(), content);
        }
        w.finish();
        m.sync();
    }
    run_checked({"fsck.exfat", "-n", img});

    ImageReport r;
    MappedFile m(img, false);
    const FatVolume v = parse_fat_volume(m.bytes());
    r.geometry = fat_geometry(v);
    for (size_t i = 0; i < spec.files.size(); ++i) {
        r.files.push_back(fat_file_extents(m.bytes(), spec.files[i].path));
        check_layout(spec.files[i], r.files.back(), v.cluster_bytes, plans[i]);
    }
    return r;
}

// debugfs reports command errors on stderr but exits 0: anything there
// besides its version banner is a failure.
void run_debugfs_script(const std::string& img, const fs::path& script, const std::string& text) {
    {
        std::ofstream out(script);
        out << text;
        if (!out) throw ToolError(fmt::format("cannot write {}", script.string()));
    }
    const ToolResult r = run_checked({"debugfs", "-w", "-f", script.string(), img});
    std::string errors;
    size_t pos = 0;
    while (pos < r.err.size()) {
        size_t end = r.err.find('\n', pos);
        if (end == std::string::npos) end = r.err.size();
        const std::string line = r.err.substr(pos, end - pos);
        if (!line.empty() && !line.starts_with("debugfs ")) errors += (errors.empty() ? "" : "; ") + line;
        pos = end + 1;
    }
    if (!errors.empty()) throw ToolError(fmt::format("debugfs -w -f {}: {}", script.string(), errors));
}

// The file's data blocks as runs of logical blocks: (first, count).
std::vector<std::pair<uint64_t, uint64_t>> data_runs(const FileSpec& f, uint64_t block, const std::vector<uint64_t>& plan) {
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    if (f.layout == Layout::fragmented) {
        uint64_t at = 0;
        for (uint64_t n : plan) {
            runs.emplace_back(at, n);
            at += n;
        }
        return runs;
    }
    const uint64_t units = (f.size_bytes + block - 1) / block;
    for (uint64_t b = 0; b < units; ++b) {
        if (in_hole(f, b * block)) continue;
        if (!runs.empty() && runs.back().first + runs.back().second == b)
            ++runs.back().second;
        else
            runs.emplace_back(b, 1);
    }
    return runs;
}

// ext2 files are copied in by mke2fs -d, which allocates them in order. ext4
// files are mapped block by block with debugfs (set_bmap) onto free space we
// choose, so a file's extents are exactly the planned runs: mke2fs would
// split a file at block-group metadata, and libext2fs puts a new extent-tree
// block right after the data block that needs it, which breaks a run.
ImageReport build_ext(const DiskSpec& spec, const std::string& img, const TempDir& tmp) {
    const uint32_t block = spec.block_bytes.value_or(4096);
    const bool place = spec.fs == FsKind::ext4;
    const fs::path root = tmp.path() / "root";
    fs::create_directory(root);
    fs::permissions(root, fs::perms(0755));
    std::vector<std::vector<uint64_t>> plans;
    for (size_t i = 0; i < spec.files.size(); ++i) {
        const FileSpec& f = spec.files[i];
        plans.push_back(plan_runs(f, i, block, "block"));
        for (const auto& dir : parents(f.path)) fs::create_directory(root / dir.substr(1));
        if (!place) stage_file(root / f.path.substr(1), f, block);
    }
    const fs::path empty = tmp.path() / "empty";
    FileSpec none;
    stage_file(empty, none, 0);

    const std::string type = spec.fs == FsKind::ext4 ? "ext4" : "ext2";
    run_checked({"mke2fs", "-q", "-F", "-t", type, "-b", std::to_string(block), "-U", kFixedUuid, "-E",
                 std::string("root_owner=0:0,hash_seed=") + kFixedUuid, "-d", root.string(), img},
                {fmt::format("E2FSPROGS_FAKE_TIME={}", kFixedMtime)});

    if (place && !spec.files.empty()) {
        const auto free = parse_free_blocks(run_checked({"dumpe2fs", img}).out);
        uint64_t cursor = 0;
        // Every data block is marked in use before any file is mapped, so
        // extent-tree blocks land outside the planned runs.
        std::string mark, map;
        for (size_t i = 0; i < spec.files.size(); ++i) {
            const FileSpec& f = spec.files[i];
            const size_t slash = f.path.rfind('/');
            const std::string leaf = f.path.substr(slash + 1);
            map += fmt::format("cd {}\nwrite {} {}\n", slash == 0 ? "/" : f.path.substr(0, slash), empty.string(), leaf);
            const auto runs = data_runs(f, block, plans[i]);
            if (runs.empty()) continue;
            const uint64_t gap = f.layout == Layout::fragmented ? 1 : 0;
            uint64_t span = 0;
            for (const auto& r : runs) span += r.second + gap;
            span -= gap;
            uint64_t start = 0;
            bool found = false;
            for (const auto& [first, last] : free) {
                const uint64_t s = std::max(first, cursor);
                if (s <= last && last - s + 1 >= span) {
                    start = s;
                    found = true;
                    break;
                }
            }
            if (!found)
                throw SpecError(fmt::format("files[{}].size_bytes", i),
                                fmt::format("no run of {} free {}-byte blocks left for {} (block-group metadata cuts "
                                            "the free space: a larger block_bytes or disk helps)", span, block, f.path));
            map += fmt::format("eo {}\n", leaf);
            uint64_t p = start;
            for (const auto& [logical, count] : runs) {
                mark += fmt::format("setb {} {}\n", p, count);
                for (uint64_t k = 0; k < count; ++k) map += fmt::format("set_bmap {} {}\n", logical + k, p + k);
                p += count + gap;
            }
            map += fmt::format("ec\nsif {} size {}\n", leaf, f.size_bytes);
            cursor = start + span;
        }
        run_debugfs_script(img, tmp.path() / "script", mark + map);
        // setb and set_bmap leave the free-block counts, the block-group
        // flags and i_blocks as they were; e2fsck's preen mode brings them in
        // line with the inodes and refuses anything that is not such a
        // bookkeeping fix (exit 4 and up).
        const ToolResult preen = run_tool({"e2fsck", "-f", "-p", img});
        if (preen.exit_code >= 4)
            throw ToolError(fmt::format("e2fsck -f -p {} after placing the files (exit {}): {}", img, preen.exit_code,
                                        preen.out + preen.err));
    }

    ImageReport r;
    {
        Fd fd(img, O_WRONLY);
        for (size_t i = 0; i < spec.files.size(); ++i) {
            r.files.push_back(ext_file_extents(img, spec.files[i].path, block));
            check_layout(spec.files[i], r.files.back(), block, plans[i]);
            write_content(fd.get(), spec.files[i], r.files.back());
        }
        if (::fsync(fd.get()) != 0) throw ToolError(fmt::format("fsync {}: {}", img, std::strerror(errno)));
    }
    const ToolResult fsck = run_tool({"e2fsck", "-f", "-n", img});
    if (fsck.exit_code != 0)
        throw ToolError(fmt::format("e2fsck -f -n {} found problems (exit {}): {}", img, fsck.exit_code, fsck.out));
    r.geometry = ext_geometry(img);
    r.geometry.fs = spec.fs;
    return r;
}

ImageReport build_raw(const DiskSpec& spec, const std::string& img) {
    ImageReport r;
    r.geometry.fs = FsKind::raw;
    r.geometry.size_bytes = spec.size_bytes;
    r.geometry.alloc_bytes = kSectorBytes;
    r.geometry.clusters = spec.size_bytes / kSectorBytes;
    Fd fd(img, O_WRONLY);
    uint64_t at = 0;
    for (const FileSpec& f : spec.files) {
        at = (at + 4095) / 4096 * 4096;
        FileExtents fx;
        fx.path = f.path;
        fx.size_bytes = f.size_bytes;
        if (f.size_bytes > 0) fx.extents.push_back({0, at / kSectorBytes, (f.size_bytes + kSectorBytes - 1) / kSectorBytes});
        write_content(fd.get(), f, fx);
        r.files.push_back(std::move(fx));
        at += f.size_bytes;
    }
    return r;
}

// The file's bytes as the image holds them (holes read as zeros) must be
// the spec's. Returns their SHA-256, which scenarios compare reads with.
std::string verify_content(std::span<const uint8_t> img, const FileSpec& f, const FileExtents& fx) {
    agent::Sha256 got, want;
    std::vector<uint8_t> zeros(1 << 20, 0);
    uint64_t pos = 0;
    auto zeros_until = [&](uint64_t end) {
        while (pos < end) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), end - pos));
            got.update(zeros.data(), n);
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
    return digest;
}

}  // namespace

ImageReport build_image(const DiskSpec& spec, const fs::path& out) {
    const std::string img = out.string();
    try {
        create_sized(out, spec.size_bytes);
        const auto scratch = scratch_dir();
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
            r.files[i].sha256 = verify_content(m.bytes(), spec.files[i], r.files[i]);
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
            {{"path", f.path}, {"size_bytes", f.size_bytes}, {"sha256", f.sha256}, {"extents", ex}, {"metadata", meta}});
    }
    return {{"fs", std::string(name(g.fs))},
            {"size_bytes", r.size_bytes},
            {"sector_bytes", kSectorBytes},
            {"geometry", geo},
            {"files", files}};
}

}  // namespace blkrig::image
