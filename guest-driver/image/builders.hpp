// The filesystem builders behind build_image, one file each
// (build_vfat.cpp, build_exfat.cpp, build_ext.cpp, build_raw.cpp), and what
// they share (build_common.cpp): staging files, planning and checking their
// layout. Internal to disk_image.
#pragma once

#include "common/temp_dir.hpp"
#include "disk_image.hpp"
#include "tool.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace blkrig::image::detail {

namespace fs = std::filesystem;

inline constexpr time_t kFixedMtime = 1704067200;  // 2024-01-01T00:00:00Z: same inputs, same image
inline constexpr const char* kFixedUuid = "b1c0b1c0-0000-4000-8000-000000000001";

class Fd {
public:
    Fd(const fs::path& p, int flags) : fd_(::open(p.c_str(), flags | O_CLOEXEC, 0644)) {
        if (fd_ < 0) throw ToolError(fmt::format("open {}: {}", p.string(), std::strerror(errno)));
    }
    ~Fd() { ::close(fd_); }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

std::unique_ptr<TempDir> scratch_dir();
void pwrite_all(int fd, const uint8_t* p, size_t n, uint64_t off);
void create_sized(const fs::path& p, uint64_t size);
bool in_hole(const FileSpec& f, uint64_t off);
void stage_file(const fs::path& dst, const FileSpec& f, uint32_t avoid_zero_blocks);
void write_content(int image_fd, const FileSpec& f, const FileExtents& fx);
std::vector<uint64_t> plan_runs(const FileSpec& f, size_t index, uint64_t unit, std::string_view unit_name);
std::string describe(const FileExtents& fx);
void check_layout(const FileSpec& f, const FileExtents& fx, uint64_t unit, const std::vector<uint64_t>& runs);
std::vector<std::string> parents(const std::string& path);

ImageReport build_vfat(const DiskSpec& spec, const std::string& img, const TempDir& tmp);
ImageReport build_exfat(const DiskSpec& spec, const std::string& img);
ImageReport build_ext(const DiskSpec& spec, const std::string& img, const TempDir& tmp);
ImageReport build_raw(const DiskSpec& spec, const std::string& img);

}  // namespace blkrig::image::detail
