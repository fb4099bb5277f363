#include "run/build_cache.hpp"

#include "agent_core/sha256.hpp"
#include "folder/digest.hpp"
#include "folder/run_folder.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

namespace blkrig::run {

namespace fs = std::filesystem;

namespace {


// Entries kept per kind; the least recently used go first.
constexpr size_t kKeep = 48;

void prune(const fs::path& kind_dir) {
    std::error_code ec;
    std::vector<std::pair<fs::file_time_type, fs::path>> entries;
    for (const auto& e : fs::directory_iterator(kind_dir, ec))
        if (e.is_directory(ec) && e.path().filename().string().front() != '.') entries.emplace_back(fs::last_write_time(e.path(), ec), e.path());
    if (entries.size() <= kKeep) return;
    std::sort(entries.begin(), entries.end());
    for (size_t i = 0; i + kKeep < entries.size(); ++i) fs::remove_all(entries[i].second, ec);
}

std::optional<std::string> copy_outputs(const fs::path& from, const std::vector<std::string>& outputs, const fs::path& dest) {
    for (const auto& o : outputs) {
        try {
            folder::copy_new(from / o, dest / o);  // never through a symlink, never over a file
        } catch (const folder::FolderError& e) {
            return fmt::format("copying {} from the build cache {} into {}: {}", o, from.string(), dest.string(), e.what());
        }
    }
    return std::nullopt;
}

// A file's digest, remembered beside the build cache by what stat says of
// it (device, inode, size, mtime, ctime), so a run that builds nothing does
// not hash the agent and the disk builder (30 MB) again. As ninja and git
// trust timestamps: a file written through any normal call gets a new
// ctime. One changed within the last seconds is not remembered (a second
// write within the clock's granularity could keep its timestamps).
std::string stat_line(const struct stat& st) {
    return fmt::format("{} {} {} {}.{:09} {}.{:09}", st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec,
                       st.st_ctim.tv_nsec);
}

fs::path digest_memo(const fs::path& p) {
    const fs::path root = build_cache_dir();
    if (root.empty()) return {};
    std::error_code ec;
    const fs::path abs = fs::absolute(p, ec);
    return ec ? fs::path() : root / "digests" / folder::sha256_hex(abs.string());
}

std::optional<std::string> recall_digest(const fs::path& memo, const std::string& stat) {
    std::ifstream in(memo);
    std::string line, hex;
    if (!in || !std::getline(in, line) || line != stat || !std::getline(in, hex) || hex.size() != 64) return std::nullopt;
    return hex;
}

void remember_digest(const fs::path& memo, const struct stat& st, const std::string& stat, const std::string& hex) {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    if (memo.empty() || st.st_mtim.tv_sec + 2 >= now.tv_sec || st.st_ctim.tv_sec + 2 >= now.tv_sec) return;
    keep_beside_cache(memo, stat + "\n" + hex + "\n");
}

}  // namespace

void keep_beside_cache(const fs::path& file, const std::string& text) {
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    try {
        folder::write_atomic(file, text);
    } catch (const std::exception&) {
    }
}

fs::path kept_file(const std::string& folder, const CacheKey& key) {
    const fs::path dir = build_cache_dir();
    return dir.empty() ? fs::path() : dir / folder / (key.hex() + ".json");
}

std::optional<std::string> read_kept(const fs::path& file) {
    if (file.empty()) return std::nullopt;
    std::ifstream in(file);
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

CacheKey::CacheKey(std::string kind) : kind_(std::move(kind)) { material_ = kind_ + "\n"; }

CacheKey& CacheKey::text(const std::string& s) {
    material_ += fmt::format("text {}\n{}\n", s.size(), s);
    return *this;
}

CacheKey& CacheKey::file(const fs::path& p) {
    // Streamed through the digest: the agent alone is 14 MB, and a run that
    // builds nothing still hashes every input (reading it into a string
    // through a stream iterator was most of a cached run's build time).
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        material_ += fmt::format("missing {}\n", p.string());
        return *this;
    }
    struct stat st{};
    const bool have_stat = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    const fs::path memo = have_stat ? digest_memo(p) : fs::path();
    const std::string stat = have_stat ? stat_line(st) : std::string();
    if (!memo.empty())
        if (auto hex = recall_digest(memo, stat)) {
            ::close(fd);
            material_ += fmt::format("file {}\n", *hex);
            return *this;
        }
    agent::Sha256 digest;
    std::vector<unsigned char> buf(1 << 20);
    bool ok = true;
    for (;;) {
        const ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            ok = n == 0;
            break;
        }
        digest.update(buf.data(), static_cast<size_t>(n));
    }
    ::close(fd);
    if (!ok) {  // unreadable: a key that matches no earlier build
        material_ += fmt::format("unreadable {} {}\n", p.string(), ::getpid());
        return *this;
    }
    const std::string hex = digest.hex();
    if (!memo.empty()) remember_digest(memo, st, stat, hex);
    // Content only: the same input at another path (another run folder) is the same input.
    material_ += fmt::format("file {}\n", hex);
    return *this;
}

CacheKey& CacheKey::stamp(const fs::path& p) {
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    const auto t = fs::last_write_time(p, ec);
    material_ += fmt::format("stamp {} {} {}\n", p.string(), ec ? 0 : size, ec ? 0 : t.time_since_epoch().count());
    return *this;
}

std::string CacheKey::hex() const { return folder::sha256_hex(material_); }

fs::path build_cache_dir() {
    if (const char* d = std::getenv("BLKRIG_BUILD_CACHE"); d && *d) return std::string(d) == "off" ? fs::path() : fs::path(d);
    if (const char* c = std::getenv("BLKRIG_CACHE"); c && *c) return fs::path(c) / "builds";
    if (::access("/var/cache/blkrig", W_OK) == 0) return "/var/cache/blkrig/builds";
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "blkrig" / "builds";
    if (const char* h = std::getenv("HOME"); h && *h) return fs::path(h) / ".cache" / "blkrig" / "builds";
    return {};
}

CacheOutcome cached_build(const CacheKey& key, const std::vector<std::string>& outputs, const fs::path& dest,
                          const std::function<std::optional<std::string>(const fs::path&)>& build) {
    const fs::path root = build_cache_dir();
    std::error_code ec;
    const fs::path kind_dir = root / key.kind();
    if (root.empty() || (fs::create_directories(kind_dir, ec), ec)) return {build(dest), false, "uncached"};  // no cache: build in place
    const std::string hex = key.hex();
    const fs::path entry = kind_dir / hex;
    // One builder per key; the others wait and then copy.
    const int lock = ::open((kind_dir / (hex + ".lock")).c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (lock < 0) return {build(dest), false, "uncached"};
    struct Unlock {
        int fd;
        ~Unlock() { ::close(fd); }
    } unlock{lock};
    while (::flock(lock, LOCK_EX) != 0 && errno == EINTR) {
    }
    if (fs::is_regular_file(entry / ".complete", ec)) {
        fs::last_write_time(entry, fs::file_time_type::clock::now(), ec);
        return {copy_outputs(entry, outputs, dest), true, "hit"};
    }
    const fs::path tmp = kind_dir / fmt::format(".build-{}-{}", hex, ::getpid());
    fs::remove_all(tmp, ec);
    fs::remove_all(entry, ec);
    fs::create_directories(tmp, ec);
    if (ec) return {build(dest), false, "uncached"};
    if (auto err = build(tmp)) {
        fs::remove_all(tmp, ec);
        return {err, false, "built"};
    }
    std::ofstream(tmp / ".complete") << "";
    fs::rename(tmp, entry, ec);
    if (ec) {
        fs::remove_all(tmp, ec);
        return {build(dest), false, "uncached"};
    }
    prune(kind_dir);
    return {copy_outputs(entry, outputs, dest), false, "built"};
}

}  // namespace blkrig::run
