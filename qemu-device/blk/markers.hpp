// The marker region: the last marker_sectors sectors of the disk, not
// backed by the store. A one-block read there is a marker, a step boundary
// the guest agent puts in the trace (common/markers.hpp says which);
// reads return a pattern that names each sector, so a guest can check it.
#pragma once

#include "blk/geometry.hpp"
#include "blk/request.hpp"

#include <sys/uio.h>

#include <cstdint>
#include <vector>

namespace blkrig::blk {

// The marker block a request reads, or -1 if it is not a marker read. Pure.
int64_t marker_index(const Geometry& g, const Request& r);

// The marker block of a sector that marker_index() accepted. Pure.
uint32_t marker_at(const Geometry& g, uint64_t sector);

// Fills bytes [skip, end) of a payload with the pattern of the marker
// sectors from FIRST_MARKER_SECTOR on.
void fill_marker(const std::vector<iovec>& data, uint64_t first_marker_sector, uint64_t skip, uint64_t end);

}  // namespace blkrig::blk
