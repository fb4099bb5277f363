// Apart from step_ops.cpp: <linux/fs.h> clashes with glibc's <sys/mount.h>.
#include "step_ops.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <linux/fiemap.h>
#include <linux/fs.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace blkrig::agent {

namespace {

constexpr unsigned kBatch = 256;

// Returns false with errno set if the filesystem has no FIEMAP.
bool by_fiemap(int fd, std::vector<Extent>& out) {
    std::vector<uint8_t> buf(sizeof(struct fiemap) + kBatch * sizeof(fiemap_extent));
    auto* fm = reinterpret_cast<struct fiemap*>(buf.data());
    uint64_t start = 0;
    for (;;) {
        std::fill(buf.begin(), buf.end(), 0);
        fm->fm_start = start;
        fm->fm_length = FIEMAP_MAX_OFFSET - start;
        fm->fm_flags = FIEMAP_FLAG_SYNC;
        fm->fm_extent_count = kBatch;
        if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) return false;
        if (fm->fm_mapped_extents == 0) return true;
        for (unsigned i = 0; i < fm->fm_mapped_extents; ++i) {
            const fiemap_extent& e = fm->fm_extents[i];
            out.push_back({e.fe_logical, e.fe_physical, e.fe_length, e.fe_flags});
            if (e.fe_flags & FIEMAP_EXTENT_LAST) return true;
        }
        const fiemap_extent& last = fm->fm_extents[fm->fm_mapped_extents - 1];
        start = last.fe_logical + last.fe_length;
    }
}

// Block by block, merging runs that are contiguous on disk; holes skipped.
bool by_fibmap(int fd, std::vector<Extent>& out, const char*& call) {
    int bsz = 0;
    call = "ioctl FIGETBSZ";
    if (::ioctl(fd, FIGETBSZ, &bsz) != 0 || bsz <= 0) return false;
    struct stat st {};
    call = "fstat";
    if (::fstat(fd, &st) != 0) return false;
    const uint64_t blocks = (static_cast<uint64_t>(st.st_size) + bsz - 1) / bsz;
    call = "ioctl FIBMAP";
    for (uint64_t b = 0; b < blocks; ++b) {
        int phys = static_cast<int>(b);
        if (::ioctl(fd, FIBMAP, &phys) != 0) return false;
        if (phys == 0) continue;
        const uint64_t logical = b * bsz, physical = static_cast<uint64_t>(phys) * bsz;
        const bool joins = !out.empty() && out.back().logical + out.back().length == logical &&
                           out.back().physical + out.back().length == physical;
        if (joins) {
            out.back().length += bsz;
        } else {
            out.push_back({logical, physical, static_cast<uint64_t>(bsz), 0});
        }
    }
    return true;
}

}  // namespace

void map_extents(const std::string& path, StepResult& r) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return r.fail("open", errno);
    std::vector<Extent> extents;
    if (!by_fiemap(fd.get(), extents)) {
        if (errno != EOPNOTSUPP && errno != ENOTTY) return r.fail("ioctl FS_IOC_FIEMAP", errno);
        extents.clear();
        const char* call = "";
        if (!by_fibmap(fd.get(), extents, call)) return r.fail(call, errno);
    }
    r.extents = std::move(extents);
}

}  // namespace blkrig::agent
