// Reading FAT12/16/32 and exFAT volumes from their bytes: the boot sector,
// the FAT, directories and cluster chains. Pure functions over the image (no
// I/O), so the layout we report is computed independently of the tools that
// made it, and tests can feed them any bytes. Every read is bounds-checked;
// anything inconsistent throws FormatError.
#pragma once

#include "disk_image.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace blkrig::image {

using Bytes = std::span<const uint8_t>;

struct FatVolume {
    bool exfat = false;
    unsigned bits = 0;  // 12, 16, 32 (exFAT entries are 32 bits too)
    uint32_t sector_bytes = 0;
    uint32_t cluster_bytes = 0;
    unsigned fats = 0;
    uint64_t fat_offset = 0;     // bytes: the active FAT
    uint64_t fat_bytes = 0;      // one FAT
    uint64_t root_offset = 0;    // FAT12/16: the fixed root directory, bytes
    uint64_t root_bytes = 0;     // 0 when the root is a cluster chain
    uint32_t root_cluster = 0;   // FAT32, exFAT
    uint64_t heap_offset = 0;    // bytes: where cluster 2 starts
    uint32_t clusters = 0;       // valid clusters are 2 .. clusters + 1
    uint64_t volume_bytes = 0;

    uint64_t cluster_offset(uint32_t cluster) const {
        return heap_offset + uint64_t(cluster - 2) * cluster_bytes;
    }
    bool valid_cluster(uint32_t c) const { return c >= 2 && c - 2 < clusters; }
};

// A file or folder found by path. exFAT files may be marked contiguous
// (NoFatChain): then the FAT is not consulted.
struct FatEntry {
    std::string name;
    bool directory = false;
    uint64_t size = 0;  // exFAT: DataLength; FAT folders: 0
    uint32_t first_cluster = 0;
    bool no_fat_chain = false;
    uint64_t valid_size = 0;  // exFAT ValidDataLength; FAT: == size
    uint64_t entry_offset = 0;  // byte offset of the (first) directory entry
};

FatVolume parse_fat_volume(Bytes image);
Geometry fat_geometry(const FatVolume& v);

// The FAT entry of a cluster, as stored (FAT32: the low 28 bits).
uint32_t fat_next(Bytes image, const FatVolume& v, uint32_t cluster);
bool fat_is_end(const FatVolume& v, uint32_t value);

// The clusters of a file or folder, in order. Files must hold exactly the
// clusters their size needs; folders run to the end of their chain.
std::vector<uint32_t> fat_clusters(Bytes image, const FatVolume& v, const FatEntry& e);

// The entries of a folder (nullopt: the root), without "." and "..".
std::vector<FatEntry> fat_list(Bytes image, const FatVolume& v, const std::optional<FatEntry>& dir);

// Case-insensitive for ASCII, as both filesystems compare names.
std::optional<FatEntry> fat_lookup(Bytes image, const FatVolume& v, std::string_view path);

// The file's runs of clusters in 512-byte sectors; throws FormatError if the
// path is not a file on the volume.
FileExtents fat_file_extents(Bytes image, std::string_view path);

// The file's bytes (size_bytes of them), read through its clusters.
std::vector<uint8_t> fat_read_file(Bytes image, std::string_view path);

// exFAT entry-set checksum and name hash (exFAT spec 6.3.3, 7.6.4); the
// name hash takes the up-cased name, which for ASCII is plain toupper.
uint16_t exfat_set_checksum(std::span<const uint8_t> set);
uint16_t exfat_name_hash(std::u16string_view upcased);

}  // namespace blkrig::image
