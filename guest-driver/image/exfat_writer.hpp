// Adding folders and files to a freshly made exFAT volume, in place.
//
// exfatprogs has no tool that copies a file in, and mounting (loop or FUSE)
// is not available everywhere the rig runs, so we write the entry sets, the
// allocation bitmap and the FAT ourselves, then let fsck.exfat judge the
// result. Clusters are handed out in increasing order and never reused, so a
// file's runs are exactly the ones asked for. Names are ASCII (the spec allows
// nothing else), so up-casing is toupper, as in the volume's up-case table.
#pragma once

#include "content.hpp"
#include "fat.hpp"

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace blkrig::image {

class ExfatWriter {
public:
    explicit ExfatWriter(std::span<uint8_t> image);

    // Makes the folder and any missing parents.
    void mkdirs(std::string_view path);

    // Makes the file (parents must exist) from `runs` clusters each, one free
    // cluster left between runs, filled from `content`. One run is written
    // as NoFatChain, as exFAT drivers write contiguous files; more runs get a
    // FAT chain.
    void add_file(std::string_view path, uint64_t size, const std::vector<uint64_t>& runs, ContentReader& content);

    // Updates PercentInUse in the boot sector (outside the boot checksum).
    void finish();

    const FatVolume& volume() const { return v_; }

private:
    struct Dir {
        std::string path;
        std::vector<uint32_t> clusters;
        uint64_t stream_offset = 0;  // image offset of its stream extension (0: the root)
        uint64_t set_offset = 0;     // of its file entry
        unsigned set_entries = 0;
    };

    Dir& dir(std::string_view path);
    uint32_t alloc(uint64_t count);  // `count` contiguous clusters at the cursor
    void set_fat(uint32_t cluster, uint32_t value);
    void zero_cluster(uint32_t c);
    void grow(Dir& d);
    // Writes the entry set into d, growing it if needed; returns the image
    // offsets of its entries.
    std::vector<uint64_t> insert(Dir& d, const std::vector<std::array<uint8_t, 32>>& set);
    void add_entry(std::string_view path, bool directory, uint64_t size, uint32_t first, bool no_fat_chain);

    std::span<uint8_t> img_;
    FatVolume v_;
    uint64_t bitmap_offset_ = 0;
    uint64_t bitmap_bytes_ = 0;
    uint32_t cursor_ = 2;  // next cluster to hand out
    std::map<std::string, Dir, std::less<>> dirs_;  // by path, "" for the root
};

}  // namespace blkrig::image
