// Disk images whose files have a controlled on-disk layout, and a report of
// where each file's bytes sit on the device, in 512-byte sectors.
//
// A spec (JSON, see README.md in this folder) names the filesystem and the
// files; build_image makes the image with Debian's tools (mkfs.vfat + mtools,
// mkfs.exfat, mke2fs + debugfs), arranges the layout asked for, checks it
// against the image, and returns the report. The scenarios read files through
// the guest's page cache and compare the device trace with this report.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace blkrig::image {

inline constexpr uint64_t kSectorBytes = 512;  // the unit of every reported sector

// A spec the builder refuses. field() is the JSON path of the culprit, e.g.
// "files[1].extents"; what() starts with it.
class SpecError : public std::runtime_error {
public:
    SpecError(std::string field, const std::string& message)
        : std::runtime_error(field + ": " + message), field_(std::move(field)) {}
    const std::string& field() const { return field_; }

private:
    std::string field_;
};

// An external tool failed; what() carries its command and stderr.
struct ToolError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Image bytes that are not the filesystem they claim to be.
struct FormatError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class FsKind { vfat, exfat, ext4, ext2, raw };
enum class Content { random, zero, pattern };
enum class Layout { contiguous, fragmented, sparse };

std::string_view name(FsKind);
std::string_view name(Content);
std::string_view name(Layout);

struct Range {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool operator==(const Range&) const = default;
};

struct FileSpec {
    std::string path;  // absolute, '/'-separated; parent folders are made
    uint64_t size_bytes = 0;
    Content content = Content::random;
    uint64_t seed = 0;
    Layout layout = Layout::contiguous;
    // fragmented: the number of extents, and optionally the file offsets
    // where extents 2..N start (multiples of the cluster/block size). Without
    // split_at the allocation units are shared out evenly, the last extent
    // taking the remainder.
    unsigned extents = 1;
    std::vector<uint64_t> split_at;
    std::vector<Range> holes;  // sparse: ranges left unallocated, sorted
};

struct DiskSpec {
    FsKind fs = FsKind::raw;
    uint64_t size_bytes = 0;
    std::optional<unsigned> fat_bits;         // vfat
    std::optional<uint32_t> cluster_bytes;    // vfat, exfat
    std::optional<uint32_t> block_bytes;      // ext4, ext2 (4096 when absent)
    std::vector<FileSpec> files;
};

// Throws SpecError naming the field for anything it does not accept:
// unknown keys, wrong types, values out of range, combinations the
// filesystem cannot do.
DiskSpec parse_spec(const nlohmann::json& spec);
DiskSpec parse_spec_text(std::string_view json_text);  // also rejects bad JSON

// One physically contiguous run of a file. Runs are made of whole blocks as
// the kernel maps them, which is what FIEMAP/FIBMAP in the guest report:
// ext: filesystem blocks; FAT, exFAT: logical sectors (512 bytes, as we
// format them), so the last run ends at the sector holding the last byte and
// the rest of its cluster (geometry.alloc_bytes) is not listed. raw: sectors.
struct Extent {
    uint64_t file_offset = 0;  // bytes
    uint64_t sector = 0;       // first device sector
    uint64_t sectors = 0;
    bool operator==(const Extent&) const = default;
};

// Blocks that map the file rather than hold its data: ext2 indirect blocks
// ("IND", "DIND", "TIND"), ext4 extent-tree blocks ("ETB0", ...).
struct MetaBlock {
    std::string kind;
    uint64_t sector = 0;
    uint64_t sectors = 0;
    bool operator==(const MetaBlock&) const = default;
};

struct FileExtents {
    std::string path;
    uint64_t size_bytes = 0;
    std::vector<Extent> extents;  // in file order; holes are absent
    std::vector<MetaBlock> metadata;
    std::string sha256;  // of the file's bytes, read back from the image (build_image)
    std::string xxh128;  // the same bytes' XXH3-128, which reads are compared with
};

// Where things are. alloc_bytes is the cluster (FAT, exFAT) or block (ext)
// size; the FAT fields are zero for other filesystems.
struct Geometry {
    FsKind fs = FsKind::raw;
    uint64_t size_bytes = 0;           // of the filesystem, which may end before the image
    uint32_t alloc_bytes = 0;
    unsigned fat_bits = 0;             // 12, 16, 32; exFAT 32
    uint64_t fat_start_sector = 0;
    uint64_t fat_sectors = 0;          // one FAT
    unsigned fats = 0;
    uint64_t root_dir_sector = 0;      // FAT12/16 fixed root; else the root cluster's sector
    uint64_t data_start_sector = 0;    // sector of cluster 2
    uint64_t clusters = 0;             // or blocks, for ext
};

struct ImageReport {
    uint64_t size_bytes = 0;  // of the image
    Geometry geometry;
    std::vector<FileExtents> files;  // in spec order
};

// Writes the image at `out` (replacing it) and returns the report. Throws
// SpecError for specs the filesystem cannot honour once its geometry is known
// (a split that is not on a cluster boundary, more extents than clusters,
// files that do not fit) and ToolError when a tool fails or the layout came
// out other than asked.
ImageReport build_image(const DiskSpec& spec, const std::filesystem::path& out);

// {"fs", "size_bytes", "sector_bytes", "geometry": {"alloc_bytes", "fs_bytes",
// FAT/exFAT: "cluster_bytes", "clusters", "fat_bits", "fats", "fat_start_sector",
// "fat_sectors", "root_dir_sector", "data_start_sector"; ext: "block_bytes",
// "blocks"}, "files": [{"path",
// "size_bytes", "sha256", "xxh128", "extents": [{"file_offset", "sector", "sectors"}],
// "metadata": [{"kind", "sector", "sectors"}]}]}
nlohmann::json to_json(const ImageReport& report);

}  // namespace blkrig::image
