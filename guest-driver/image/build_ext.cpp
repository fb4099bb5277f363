// ext2 and ext4 images: mke2fs, then debugfs.
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

}  // namespace

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

}  // namespace blkrig::image::detail
