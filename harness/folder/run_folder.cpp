// Run folders: claimed (marker, lock, --force), and files in them created
// without following symlinks or replacing anything (run_folder.hpp).
#include "folder/run_folder.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

namespace blkrig::folder {

namespace fs = std::filesystem;
using nlohmann::json;

const char* to_string(Kind k) { return k == Kind::matrix ? "matrix" : k == Kind::crash ? "crash" : "run"; }

namespace {

std::string errno_text(int e) { return std::strerror(e); }

// The marker's text, or nullopt if there is no marker (a symlink named so is none).
std::optional<Kind> read_marker(int dfd) {
    const int fd = ::openat(dfd, kMarker, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    if (n <= 0) return std::nullopt;
    const auto j = json::parse(std::string(buf, static_cast<size_t>(n)), nullptr, false);
    if (!j.is_object()) return std::nullopt;
    const std::string kind = j.value("kind", "");
    if (kind == "run") return Kind::run;
    if (kind == "matrix") return Kind::matrix;
    if (kind == "crash") return Kind::crash;
    return std::nullopt;
}

void write_all(int fd, std::string_view text, const fs::path& what) {
    while (!text.empty()) {
        const ssize_t n = ::write(fd, text.data(), text.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw FolderError(3, fmt::format("cannot write {}: {}", what.string(), errno_text(errno)));
        text.remove_prefix(static_cast<size_t>(n));
    }
}

std::string marker_text(Kind k) { return json{{"kind", to_string(k)}, {"written_by", "blkrig"}, {"version", 1}}.dump() + "\n"; }

// What the folder holds besides the marker, the lock (and a matrix's run.log, when marked).
std::vector<std::string> contents(const fs::path& dir, bool marked) {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        const std::string n = e.path().filename().string();
        if (n == kMarker || n == kLock || (marked && n == kMatrixLog)) continue;
        names.push_back(n);
    }
    if (ec) throw FolderError(2, fmt::format("cannot list {}: {}", dir.string(), ec.message()));
    std::sort(names.begin(), names.end());
    return names;
}

std::string some_of(const std::vector<std::string>& names) {
    std::string s;
    for (size_t i = 0; i < names.size() && i < 3; ++i) s += (i ? ", " : "") + names[i];
    if (names.size() > 3) s += fmt::format(" and {} more", names.size() - 3);
    return s;
}

// The pid a lock's holder wrote, or "" if unreadable.
std::string holder_pid(int lock_fd) {
    char buf[64];
    const ssize_t n = ::pread(lock_fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return "";
    std::string s(buf, static_cast<size_t>(n));
    s.erase(std::remove_if(s.begin(), s.end(), [](char c) { return c < '0' || c > '9'; }), s.end());
    return s;
}

}  // namespace

Claim::~Claim() {
    if (lock_fd_ >= 0) ::close(lock_fd_);
}

Claim::Claim(Claim&& o) noexcept : dir_(std::move(o.dir_)), lock_fd_(std::exchange(o.lock_fd_, -1)), replaced_(o.replaced_) {}

Claim& Claim::operator=(Claim&& o) noexcept {
    if (this != &o) {
        if (lock_fd_ >= 0) ::close(lock_fd_);
        dir_ = std::move(o.dir_);
        lock_fd_ = std::exchange(o.lock_fd_, -1);
        replaced_ = o.replaced_;
    }
    return *this;
}

std::optional<Kind> kind_of(const fs::path& dir) {
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return std::nullopt;
    const auto k = read_marker(dfd);
    ::close(dfd);
    return k;
}

Claim claim(const fs::path& dir, Kind kind, bool force, std::string_view option) {
    const std::string where = fmt::format("{} {}", option, dir.string());
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (!fs::is_directory(dir, ec)) throw FolderError(2, fmt::format("{}: not a folder{}", where, ec ? ": " + ec.message() : std::string()));
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) throw FolderError(2, fmt::format("{}: cannot open it: {}", where, errno_text(errno)));
    struct CloseDir {
        int fd;
        ~CloseDir() { ::close(fd); }
    } close_dir{dfd};

    auto not_ours = [&](const std::vector<std::string>& names) {
        return FolderError(2, fmt::format("{} is not empty and not a blkrig run folder (no {} in it; it holds {}): nothing in it was "
                                          "touched; give a new or empty folder",
                                          where, kMarker, some_of(names)));
    };
    // Checked before the lock file is made, so a folder that is not ours gets nothing new.
    if (!read_marker(dfd)) {
        const auto names = contents(dir, false);
        if (!names.empty()) throw not_ours(names);
    }
    const int lock = ::openat(dfd, kLock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (lock < 0) throw FolderError(2, fmt::format("{}: cannot open its lock file {}: {}", where, kLock, errno_text(errno)));
    struct CloseLock {
        int fd;
        ~CloseLock() {
            if (fd >= 0) ::close(fd);
        }
    } close_lock{lock};
    bool replaced = false;
    if (::flock(lock, LOCK_EX | LOCK_NB) != 0) {
        const std::string pid = holder_pid(lock);
        throw FolderError(2, fmt::format("{} is in use by another blkrig ({}): wait for it to finish, or give another folder", where,
                                         pid.empty() ? "pid unknown" : "pid " + pid));
    }
    // Looked at again under the lock: the folder may have changed meanwhile.
    const auto marked = read_marker(dfd);
    const auto names = contents(dir, marked.has_value());
    if (!marked) {
        if (!names.empty()) throw not_ours(names);
        const int fd = ::openat(dfd, kMarker, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) throw FolderError(2, fmt::format("{}: cannot write {}: {}", where, kMarker, errno_text(errno)));
        write_all(fd, marker_text(kind), dir / kMarker);
        ::close(fd);
    } else if (!names.empty() || *marked != kind) {
        if (!force)
            throw FolderError(2, fmt::format("{} holds an earlier blkrig {} ({}): give --force to replace it, or another folder", where,
                                             to_string(*marked), some_of(names)));
        // Ours: remove_all takes symlinks as links, never what they point to.
        for (const auto& n : contents(dir, false)) {
            fs::remove_all(dir / n, ec);
            if (ec) throw FolderError(3, fmt::format("{}: cannot remove the earlier {}'s {}: {}", where, to_string(*marked), n, ec.message()));
        }
        write_atomic(dir / kMarker, marker_text(kind));
        replaced = true;
    }
    const std::string pid = fmt::format("{}\n", ::getpid());
    if (::ftruncate(lock, 0) != 0 || ::pwrite(lock, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
        throw FolderError(3, fmt::format("{}: cannot write its lock file: {}", where, errno_text(errno)));
    close_lock.fd = -1;
    return Claim(fs::absolute(dir), lock, replaced);
}

void mark_new(const fs::path& dir, Kind kind) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw FolderError(3, fmt::format("cannot create {}: {}", dir.string(), ec.message()));
    const int fd = create_new(dir / kMarker);
    try {
        write_all(fd, marker_text(kind), dir / kMarker);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
}

int create_new(const fs::path& p, int mode) {
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        const int e = errno;
        throw FolderError(3, fmt::format("cannot create {}: {}", p.string(),
                                         e == EEXIST ? "something of that name is already there (a file or a symlink); it was left alone"
                                                     : errno_text(e)));
    }
    return fd;
}

namespace {
fs::path temp_beside(const fs::path& p) {
    return p.parent_path() / fmt::format(".{}.{}.tmp", p.filename().string(), ::getpid());
}

void publish(const fs::path& tmp, const fs::path& p) {
    if (::rename(tmp.c_str(), p.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw FolderError(3, fmt::format("cannot write {}: {}", p.string(), errno_text(e)));
    }
}
}  // namespace

void write_atomic(const fs::path& p, std::string_view text) {
    const fs::path tmp = temp_beside(p);
    ::unlink(tmp.c_str());  // a leftover of this very pid's earlier attempt
    const int fd = create_new(tmp);
    try {
        write_all(fd, text, p);
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    if (::close(fd) != 0) {
        ::unlink(tmp.c_str());
        throw FolderError(3, fmt::format("cannot write {}: {}", p.string(), errno_text(errno)));
    }
    publish(tmp, p);
}

namespace {

// from's bytes into out (an empty new file): a reflink where the filesystem
// has them, else the parts that hold data copied in the kernel, holes left
// holes (a 64 MiB disk image with 1 MiB written costs 1 MiB, not 64), else
// read and write. False with errno when none worked.
bool copy_bytes(int in, int out, const fs::path& to) {
    if (::ioctl(out, FICLONE, in) == 0) return true;
    const off_t size = ::lseek(in, 0, SEEK_END);
    if (size < 0 || ::ftruncate(out, size) != 0) return false;
    auto range = [&](off_t from, off_t end) {
        loff_t src = from, dst = from;
        while (src < end) {
            const ssize_t n = ::copy_file_range(in, &src, out, &dst, static_cast<size_t>(end - src), 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
        }
        char buf[1 << 16];
        while (src < end) {  // copy_file_range refused (another filesystem, an old kernel): through user space
            const ssize_t n = ::pread(in, buf, static_cast<size_t>(std::min<off_t>(end - src, sizeof buf)), src);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            if (::lseek(out, src, SEEK_SET) < 0) return false;
            write_all(out, std::string_view(buf, static_cast<size_t>(n)), to);
            src += n;
        }
        return true;
    };
    for (off_t pos = 0; pos < size;) {
        off_t data = ::lseek(in, pos, SEEK_DATA);
        if (data < 0 && errno == ENXIO) return true;  // only a hole is left
        if (data < 0) return range(pos, size);         // no SEEK_DATA here: all of it
        const off_t hole = ::lseek(in, data, SEEK_HOLE);
        if (hole < 0) return range(data, size);
        if (!range(data, hole)) return false;
        pos = hole;
    }
    return true;
}

}  // namespace

void copy_new(const fs::path& from, const fs::path& to) {
    const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) throw FolderError(3, fmt::format("cannot read {}: {}", from.string(), errno_text(errno)));
    const fs::path tmp = temp_beside(to);
    ::unlink(tmp.c_str());
    int out = -1;
    try {
        out = create_new(tmp);
        if (!copy_bytes(in, out, to)) throw FolderError(3, fmt::format("cannot copy {} to {}: {}", from.string(), to.string(), errno_text(errno)));
    } catch (...) {
        ::close(in);
        if (out >= 0) {
            ::close(out);
            ::unlink(tmp.c_str());
        }
        throw;
    }
    ::close(in);
    ::close(out);
    // Not rename: a file of that name must not be replaced either.
    if (::link(tmp.c_str(), to.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw FolderError(3, fmt::format("cannot create {}: {}", to.string(),
                                         e == EEXIST ? "something of that name is already there; it was left alone" : errno_text(e)));
    }
    ::unlink(tmp.c_str());
}

std::optional<std::string> interruption(const fs::path& dir) {
    const int fd = ::open((dir / "verdict.json").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    std::string text;
    char buf[1 << 16];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
    ::close(fd);
    const auto v = json::parse(text, nullptr, false);
    if (!v.is_object() || v.value("outcome", "") != "interrupted") return std::nullopt;
    const auto problems = v.value("problems", json::array());
    const std::string how = !problems.empty() && problems[0].is_string() ? problems[0].get<std::string>() : "interrupted";
    return "the run was " + how;
}

}  // namespace blkrig::folder
