// Raw images: no filesystem, the disk's bytes as the spec gives them.
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
