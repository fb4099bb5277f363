// The control plane: JSON-RPC 2.0 over a Unix socket (--control PATH), one
// request per line, one response per line. It runs on a thread of its own,
// off the request path; methods come from a table (methods.cpp), so a new
// one is a row, not a branch. The socket is created 0600.
#pragma once

#include "common/fd.hpp"
#include "common/paths.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

namespace blkrig::control {

// A method's way to refuse its params: becomes JSON-RPC error -32602.
struct InvalidParams : std::runtime_error {
    using std::runtime_error::runtime_error;
};

using Method = std::function<nlohmann::json(const nlohmann::json& params)>;
using MethodTable = std::map<std::string, Method>;

// One request line in, one response out (pure apart from the methods it
// calls). Exposed for tests and fuzzing.
nlohmann::json handle_line(const std::string& line, const MethodTable& methods);

// handle_line's answer as the server sends it: one line of JSON, newline
// included. Text that is not UTF-8 (a parse error quotes the bytes it
// stopped at) is sent with U+FFFD in its place.
std::string response_line(const std::string& line, const MethodTable& methods);

inline constexpr size_t kMaxRequestBytes = 64 * 1024;

class Server {
public:
    // Throws PathError if path is taken (a file, a live socket: never
    // replaced), std::runtime_error if the socket cannot be created.
    Server(const std::string& path, MethodTable methods);
    ~Server();  // stops the thread, removes the socket if it is still ours
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

private:
    void run();
    void serve(int conn);

    std::string path_;
    MethodTable methods_;
    UniqueFd listen_, stop_;
    OwnSocket own_;
    std::thread thread_;
};

}  // namespace blkrig::control
