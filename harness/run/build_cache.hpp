// Build work shared across runs: a disk image or an initramfs is made once
// per distinct input and reused, in a cache keyed by the content of
// everything that goes into it (docs/harness.md, "The build cache").
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace blkrig::run {

// What goes into one build: text (specs, argv) and files (tools, inputs)
// whose content is hashed. The key is the SHA-256 of all of it.
class CacheKey {
public:
    explicit CacheKey(std::string kind);
    CacheKey& text(const std::string& s);
    // The file's content; a missing file counts as such (the build fails later with its own message).
    CacheKey& file(const std::filesystem::path& p);
    // Size and modification time only: for large inputs that change only when rewritten (a kernel's modules.dep, programs).
    CacheKey& stamp(const std::filesystem::path& p);
    std::string hex() const;
    const std::string& kind() const { return kind_; }

private:
    std::string kind_;
    std::string material_;
};

// The cache folder: $BLKRIG_BUILD_CACHE, else $BLKRIG_CACHE/builds, else
// /var/cache/blkrig/builds when writable, else ~/.cache/blkrig/builds.
// Empty when BLKRIG_BUILD_CACHE=off.
std::filesystem::path build_cache_dir();

// What runs keep beside the cache (a file's digest, a function filter, a
// passed extent check): written whole (a reader sees the old text or the
// new), its folder made first. A failure is ignored: the next run does the
// work again and writes it then.
void keep_beside_cache(const std::filesystem::path& file, const std::string& text);

// Where key's record of one kind is kept beside the cache (folder/<key>.json);
// empty when there is no cache.
std::filesystem::path kept_file(const std::string& folder, const CacheKey& key);

// A kept file's text; nullopt when there is none (or no cache: path empty).
std::optional<std::string> read_kept(const std::filesystem::path& file);

// Makes the outputs (file names) of key into dest: copied from the cache when
// there, else built by build(folder) into a fresh folder and then published.
// Concurrent runs with the same key wait for one build (a lock per key).
// build returns an error message, or nullopt on success. Returns nullopt or
// build's error; "hit" tells whether the cache served it.
struct CacheOutcome {
    std::optional<std::string> error;
    bool hit = false;
    const char* how = "uncached";  // hit | built (and published) | uncached (no cache: built in place)
};
CacheOutcome cached_build(const CacheKey& key, const std::vector<std::string>& outputs, const std::filesystem::path& dest,
                          const std::function<std::optional<std::string>(const std::filesystem::path& folder)>& build);

}  // namespace blkrig::run
