// The kernel catalogue (guest-driver/kernels/catalogue.toml): the guest
// kernels known by name, and the default. The same file is read by
// fetch-debian and the pytest plugin, so a kernel is added in one place.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace blkrig::run {

struct CatalogueError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct CatalogueKernel {
    std::string name;
    std::string summary;
    std::string suite;    // Debian suite
    std::string package;  // meta package naming the current image
};

struct Catalogue {
    std::string default_name;
    std::vector<CatalogueKernel> kernels;

    const CatalogueKernel* find(std::string_view name) const;
    std::string names() const;  // "a b c", for messages
};

// Pure: TEXT as read from SOURCE (named in errors, with the line).
Catalogue parse_catalogue(std::string_view text, const std::string& source);

// The project's catalogue, read once (BLKRIG_SOURCE_DIR, overridable like
// the scripts' by the environment variable of that name).
const Catalogue& catalogue();
std::filesystem::path catalogue_path();

}  // namespace blkrig::run
