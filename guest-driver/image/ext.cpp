#include "ext.hpp"

#include "tool.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <regex>

namespace blkrig::image {

FileExtents parse_debugfs_stat(std::string_view text, std::string_view path, uint32_t block_bytes) {
    const std::string t(text);
    FileExtents fx;
    fx.path = std::string(path);
    std::smatch m;
    if (!std::regex_search(t, m, std::regex(R"(Type:\s+(\S+))")) || m[1] != "regular")
        throw FormatError(fmt::format("debugfs: '{}' is not a regular file", path));
    if (!std::regex_search(t, m, std::regex(R"(Size:\s+(\d+))")))
        throw FormatError(fmt::format("debugfs: no size for '{}'", path));
    fx.size_bytes = std::stoull(m[1]);

    size_t start = t.find("\nEXTENTS:");
    const bool extent_mapped = start != std::string::npos;
    if (start == std::string::npos) start = t.find("\nBLOCKS:");
    if (start == std::string::npos) {
        if (fx.size_bytes == 0) return fx;  // nothing mapped
        throw FormatError(fmt::format("debugfs: no block map for '{}'", path));
    }
    size_t end = t.find("\nTOTAL:", start);
    const std::string section = t.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const uint64_t per_block = block_bytes / kSectorBytes;
    // "(LOGICAL[-LAST][[u]]):PHYS[-LAST]" or "(IND|DIND|TIND|ETBn):PHYS[-LAST]"
    static const std::regex token(R"(\((\d+)(?:-(\d+))?(\[u\])?\):(\d+)(?:-(\d+))?|\(([A-Z]+\d*)\):(\d+)(?:-(\d+))?)");
    for (auto it = std::sregex_iterator(section.begin(), section.end(), token); it != std::sregex_iterator(); ++it) {
        const auto& x = *it;
        if (x[6].matched) {
            const uint64_t first = std::stoull(x[7]);
            const uint64_t last = x[8].matched ? std::stoull(x[8]) : first;
            fx.metadata.push_back({x[6], first * per_block, (last - first + 1) * per_block});
            continue;
        }
        if (x[3].matched)
            throw FormatError(fmt::format("'{}' has an uninitialized extent at block {}", path, x[1].str()));
        const uint64_t lfirst = std::stoull(x[1]);
        const uint64_t llast = x[2].matched ? std::stoull(x[2]) : lfirst;
        const uint64_t pfirst = std::stoull(x[4]);
        const uint64_t plast = x[5].matched ? std::stoull(x[5]) : pfirst;
        if (llast < lfirst || plast - pfirst != llast - lfirst)
            throw FormatError(fmt::format("debugfs: inconsistent run '{}' for '{}'", x.str(), path));
        Extent e{lfirst * block_bytes, pfirst * per_block, (llast - lfirst + 1) * per_block};
        if (!fx.extents.empty()) {
            const Extent& prev = fx.extents.back();
            if (e.file_offset < prev.file_offset + prev.sectors * kSectorBytes)
                throw FormatError(fmt::format("debugfs: runs out of order for '{}'", path));
            // ext2 maps block by block: debugfs prints runs, which we join
            // when they continue each other. ext4 extents stay apart, even
            // adjacent ones (at most 32768 blocks each), as FIEMAP lists them.
            if (!extent_mapped && prev.file_offset + prev.sectors * kSectorBytes == e.file_offset &&
                prev.sector + prev.sectors == e.sector) {
                fx.extents.back().sectors += e.sectors;
                continue;
            }
        }
        fx.extents.push_back(e);
    }
    return fx;
}

Geometry parse_dumpe2fs(std::string_view text) {
    const std::string t(text);
    std::smatch size, count;
    if (!std::regex_search(t, size, std::regex(R"(\nBlock size:\s+(\d+))")) ||
        !std::regex_search(t, count, std::regex(R"(\nBlock count:\s+(\d+))")))
        throw FormatError("dumpe2fs: no block size or count");
    Geometry g;
    g.fs = std::regex_search(t, std::regex(R"(features:.*\bextents?\b)")) ? FsKind::ext4 : FsKind::ext2;
    g.alloc_bytes = static_cast<uint32_t>(std::stoul(size[1]));
    g.clusters = std::stoull(count[1]);
    g.size_bytes = g.clusters * g.alloc_bytes;
    return g;
}

std::vector<std::pair<uint64_t, uint64_t>> parse_free_blocks(std::string_view text) {
    const std::string t(text);
    std::vector<std::pair<uint64_t, uint64_t>> out;
    // Per group: "  Free blocks: 4139-32767, 40000"; the summary line has no indent.
    static const std::regex line(R"(\n\s+Free blocks: ([^\n]*))");
    static const std::regex range(R"((\d+)(?:-(\d+))?)");
    for (auto it = std::sregex_iterator(t.begin(), t.end(), line); it != std::sregex_iterator(); ++it) {
        const std::string list = (*it)[1];
        for (auto r = std::sregex_iterator(list.begin(), list.end(), range); r != std::sregex_iterator(); ++r) {
            const uint64_t first = std::stoull((*r)[1]);
            const uint64_t last = (*r)[2].matched ? std::stoull((*r)[2]) : first;
            if (!out.empty() && out.back().second + 1 == first)
                out.back().second = last;
            else
                out.emplace_back(first, last);
        }
    }
    return out;
}

FileExtents ext_file_extents(const std::string& image, const std::string& path, uint32_t block_bytes) {
    const ToolResult r = run_checked({"debugfs", "-R", "stat " + path, image});
    if (r.out.find("Inode:") == std::string::npos)
        throw FormatError(fmt::format("debugfs: cannot stat '{}': {}", path, r.err));
    return parse_debugfs_stat(r.out, path, block_bytes);
}

Geometry ext_geometry(const std::string& image) {
    return parse_dumpe2fs(run_checked({"dumpe2fs", "-h", image}).out);
}

}  // namespace blkrig::image
