// Paths a user names on a command line: the checks that keep us from
// deleting or overwriting what is not ours. A socket path may be taken only
// when nothing is there, or a stale socket (nobody accepts on it); one path
// must not be given for two jobs (a trace written over the image).
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace blkrig {

// A path we must not take: the message names the option and the path.
struct PathError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class SocketPathState {
    absent,        // nothing there
    stale_socket,  // a socket nobody accepts on (connect() refused): a dead program's
    live_socket,   // a socket some program accepts connections on
    not_a_socket,  // a file, folder, link, ...: the user's
};
SocketPathState probe_socket_path(const std::string& path);

// Why `option path` cannot become our socket, or nothing.
std::optional<std::string> socket_path_problem(const std::string& option, const std::string& path);

// Makes path free for a socket of ours: removes a stale socket, throws
// PathError for anything else that is there.
void claim_socket_path(const std::string& option, const std::string& path);

// Removes the socket we bound at path, unless it is no longer ours (another
// program replaced it meanwhile): identified by its inode.
struct OwnSocket {
    std::string path;
    unsigned long dev = 0, ino = 0;
};
OwnSocket own_socket(const std::string& path);  // after bind; ino 0 if it cannot be read
void remove_own_socket(const OwnSocket& s);

// Options naming files: (option, path) pairs, empty paths skipped. The
// first two that name the same file (the same path once symlinks and ".."
// are resolved, or the same inode), as "--a and --b both name FILE".
std::optional<std::string> same_file_twice(const std::vector<std::pair<std::string, std::string>>& named);

}  // namespace blkrig
