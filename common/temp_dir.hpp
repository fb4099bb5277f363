// A private temporary folder: mkdtemp's (mode 0700, a name no one else
// has), removed with everything in it when its owner goes. The run's
// socket folder, the disk builder's scratch space and the tests' all are one.
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>

namespace blkrig {

class TempDir {
public:
    // PARENT/PREFIXXXXXXX; a failure is std::system_error naming the template.
    explicit TempDir(const std::string& prefix = "blkrig-unit-",
                     const std::filesystem::path& parent = std::filesystem::temp_directory_path()) {
        std::string tmpl = (parent / (prefix + "XXXXXX")).string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::system_error(errno, std::generic_category(), "mkdtemp " + tmpl);
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return path_; }
    std::string file(const std::string& name) const { return (path_ / name).string(); }

private:
    std::filesystem::path path_;
};

}  // namespace blkrig
