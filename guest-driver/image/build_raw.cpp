// Raw images: no filesystem, the disk's bytes as the spec gives them.
#include "builders.hpp"
#include "content.hpp"
#include <fmt/format.h>
#include <cerrno>
#include <cstring>

namespace blkrig::image::detail {

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

}  // namespace blkrig::image::detail
