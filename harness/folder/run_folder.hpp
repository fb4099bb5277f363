// Run folders are ours, and nothing else is: `--out` claims a folder only if
// it is new, empty, or marked as one blkrig wrote (.blkrig-run, written
// first), replaces an earlier one only when asked (--force), and holds a
// lock on it (.blkrig-lock, flock, with the holder's pid) while the run
// writes. Files the run writes are created without following symlinks and
// without replacing anything (O_NOFOLLOW|O_EXCL), and artifacts appear whole
// or not at all (a temporary name, then rename).
#pragma once

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace blkrig::folder {

// exit_code 2: the folder given is not usable (not ours, in use, an earlier
// run without --force); 3: writing in it failed.
struct FolderError : std::runtime_error {
    FolderError(int code, const std::string& what) : std::runtime_error(what), exit_code(code) {}
    int exit_code;
};

enum class Kind { run, matrix, crash };
const char* to_string(Kind k);

inline constexpr const char* kMarker = ".blkrig-run";
inline constexpr const char* kLock = ".blkrig-lock";
// A matrix marks each cell's folder and writes the cell run's output here
// before that run claims the folder: it is not an earlier run's.
inline constexpr const char* kMatrixLog = "run.log";

// The folder as long as this lives; the lock goes with it (and with the
// process, however it ends).
class Claim {
public:
    Claim() = default;
    Claim(std::filesystem::path dir, int lock_fd, bool replaced) : dir_(std::move(dir)), lock_fd_(lock_fd), replaced_(replaced) {}
    ~Claim();
    Claim(Claim&& o) noexcept;
    Claim& operator=(Claim&& o) noexcept;
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;
    const std::filesystem::path& dir() const { return dir_; }
    bool replaced() const { return replaced_; }  // --force removed an earlier run's files

private:
    std::filesystem::path dir_;
    int lock_fd_ = -1;
    bool replaced_ = false;
};

// Claims dir for a run or a matrix (created if missing). option names the
// flag in messages ("--out"). FolderError (2) for a folder that is not
// empty and not ours, one another blkrig holds (naming its pid), or an
// earlier run without force; with force, everything in an earlier one
// (run or matrix) is removed first, symlinks as links.
Claim claim(const std::filesystem::path& dir, Kind kind, bool force, std::string_view option = "--out");

// What kind of blkrig folder dir is; nullopt when it is not one.
std::optional<Kind> kind_of(const std::filesystem::path& dir);

// Marks a new, empty folder as a run folder without locking it: a matrix
// does this for each cell before the cell's run claims it.
void mark_new(const std::filesystem::path& dir, Kind kind);

// A new file, opened for writing: O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC.
// Returns the fd; FolderError (3) naming the path if it exists or cannot be made.
int create_new(const std::filesystem::path& p, int mode = 0644);

// p written whole or not at all: a new temporary file beside it, then
// rename (which replaces a symlink at p, never what it points to).
void write_atomic(const std::filesystem::path& p, std::string_view text);

// from's content into to, a new file (create_new), through a temporary
// name; from may be anything the user names (symlinks followed).
void copy_new(const std::filesystem::path& from, const std::filesystem::path& to);

// When dir's verdict.json says the run was interrupted: how ("the run was
// interrupted by signal 2 (Interrupt) while booting the guest"); else nullopt.
std::optional<std::string> interruption(const std::filesystem::path& dir);

}  // namespace blkrig::folder
