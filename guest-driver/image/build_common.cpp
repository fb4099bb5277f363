// What the filesystem builders share (builders.hpp).
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

// A scratch folder for the staged files, made through the common TempDir.
std::unique_ptr<TempDir> scratch_dir() {
    try {
        return std::make_unique<TempDir>("blkrig-mkdisk-");
    } catch (const std::system_error& e) {
        throw ToolError(e.what());
    }
}


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

}  // namespace blkrig::image::detail
