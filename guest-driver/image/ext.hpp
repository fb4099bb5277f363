// ext2/ext4 block maps, read with e2fsprogs (debugfs, dumpe2fs): their
// parsers are pure functions over the tools' text so they can be tested
// without images.
#pragma once

#include "disk_image.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace blkrig::image {

// `debugfs -R "stat PATH"`: the size and the BLOCKS/EXTENTS section, e.g.
// "(0-11):598-609, (IND):610, (12-39):611-638". ext4 extents are kept as
// they are on disk (as the guest's FIEMAP reports them); ext2 runs that
// continue each other are joined. Uninitialized extents (read as zeros
// without I/O) throw FormatError.
FileExtents parse_debugfs_stat(std::string_view text, std::string_view path, uint32_t block_bytes);

// `dumpe2fs -h`: block size and count.
Geometry parse_dumpe2fs(std::string_view text);

// `dumpe2fs`: the free blocks, as [first, last] ranges in block order, with
// ranges that continue each other across block groups joined.
std::vector<std::pair<uint64_t, uint64_t>> parse_free_blocks(std::string_view dumpe2fs);


FileExtents ext_file_extents(const std::string& image, const std::string& path, uint32_t block_bytes);
Geometry ext_geometry(const std::string& image);

}  // namespace blkrig::image
