// An image file mapped into memory, read-only or shared read-write, so the
// pure parsers get a span and writers change the file in place.
#pragma once

#include "disk_image.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <string>

namespace blkrig::image {

class MappedFile {
public:
    MappedFile(const std::string& path, bool writable) {
        fd_ = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
        if (fd_ < 0) throw ToolError(fmt::format("open {}: {}", path, std::strerror(errno)));
        struct stat st {};
        if (::fstat(fd_, &st) != 0) fail(path, "fstat");
        size_ = static_cast<size_t>(st.st_size);
        if (size_ == 0) return;
        void* p = ::mmap(nullptr, size_, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd_, 0);
        if (p == MAP_FAILED) fail(path, "mmap");
        data_ = static_cast<uint8_t*>(p);
    }
    ~MappedFile() {
        if (data_ != nullptr) ::munmap(data_, size_);
        if (fd_ >= 0) ::close(fd_);
    }
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    std::span<const uint8_t> bytes() const { return {data_, size_}; }
    std::span<uint8_t> writable_bytes() { return {data_, size_}; }
    // Pushes writes to the file before tools that read it run.
    void sync() {
        if (data_ != nullptr && ::msync(data_, size_, MS_SYNC) != 0)
            throw ToolError(fmt::format("msync: {}", std::strerror(errno)));
    }

private:
    [[noreturn]] void fail(const std::string& path, const char* what) {
        const int e = errno;
        ::close(fd_);
        fd_ = -1;
        throw ToolError(fmt::format("{} {}: {}", what, path, std::strerror(e)));
    }

    int fd_ = -1;
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace blkrig::image
