#include "control/rpc.hpp"

#include "common/log.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace blkrig::control {

using nlohmann::json;

namespace {
json error(const json& id, int code, const std::string& message) {
    return {{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", message}}}};
}
}  // namespace

json handle_line(const std::string& line, const MethodTable& methods) {
    if (line.size() > kMaxRequestBytes) return error(nullptr, -32600, "request larger than 64 KiB");
    json req;
    try {
        req = json::parse(line);
    } catch (const json::exception& e) {
        return error(nullptr, -32700, std::string("parse error: ") + e.what());
    }
    const json id = req.is_object() && req.contains("id") ? req["id"] : json(nullptr);
    // Compared as JSON values: value("jsonrpc", "") throws when it is not a string.
    if (!req.is_object() || !req.contains("jsonrpc") || req["jsonrpc"] != "2.0" || !req.contains("method") || !req["method"].is_string())
        return error(id, -32600, "invalid request: expected {\"jsonrpc\":\"2.0\",\"method\":...,\"id\":...}");
    const std::string method = req["method"];
    auto it = methods.find(method);
    if (it == methods.end()) {
        std::string known;
        for (const auto& [k, v] : methods) known += (known.empty() ? "" : ", ") + k;
        return error(id, -32601, "unknown method '" + method + "' (known: " + known + ")");
    }
    const json params = req.contains("params") ? req["params"] : json::object();
    if (!params.is_object()) return error(id, -32602, "params must be an object");
    try {
        return {{"jsonrpc", "2.0"}, {"id", id}, {"result", it->second(params)}};
    } catch (const InvalidParams& e) {
        return error(id, -32602, e.what());
    } catch (const json::exception& e) {
        return error(id, -32602, std::string("invalid params: ") + e.what());
    } catch (const std::exception& e) {
        return error(id, -32000, e.what());
    }
}

std::string response_line(const std::string& line, const MethodTable& methods) {
    return handle_line(line, methods).dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

Server::Server(const std::string& path, MethodTable methods) : path_(path), methods_(std::move(methods)) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        throw PathError(fmt::format("--control {}: the path is too long ({} bytes; a Unix socket path holds at most {})", path, path.size(),
                                    sizeof addr.sun_path - 1));
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    // Never the user's file or a live socket: only a dead program's socket is replaced.
    claim_socket_path("--control", path);
    // Only the owner may steer the device: umask for the bind, then chmod.
    const mode_t old = ::umask(0177);
    const int b = ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    const int bind_errno = errno;
    ::umask(old);
    if (b != 0 && bind_errno == EADDRINUSE) throw PathError(fmt::format("--control {}: in use: another program created it just now", path));
    if (b != 0) throw std::runtime_error(fmt::format("cannot create control socket {}: {}", path, std::strerror(bind_errno)));
    own_ = own_socket(path);
    if (::chmod(path.c_str(), 0600) != 0 || ::listen(listen_.get(), 8) != 0) {
        const int e = errno;
        remove_own_socket(own_);
        throw std::runtime_error(fmt::format("cannot create control socket {}: {}", path, std::strerror(e)));
    }
    stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    thread_ = std::thread([this] { run(); });
}

Server::~Server() {
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
    thread_.join();
    remove_own_socket(own_);
}

void Server::run() {
    pollfd fds[2] = {{listen_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    for (;;) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[1].revents) return;
        UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (conn.valid()) serve(conn.get());
    }
}

// One client at a time: control traffic is a person or a test script.
void Server::serve(int conn) {
    std::string buf;
    char chunk[4096];
    pollfd fds[2] = {{conn, POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    for (;;) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[1].revents) return;
        const ssize_t n = ::recv(conn, chunk, sizeof chunk, 0);
        if (n <= 0) return;
        buf.append(chunk, static_cast<size_t>(n));
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
            const std::string line = buf.substr(0, nl);
            buf.erase(0, nl + 1);
            const std::string out = response_line(line, methods_);
            if (::send(conn, out.data(), out.size(), MSG_NOSIGNAL) < 0) return;
        }
        if (buf.size() > kMaxRequestBytes) {
            const std::string out = response_line(buf, methods_);  // the "too large" error
            [[maybe_unused]] auto s = ::send(conn, out.data(), out.size(), MSG_NOSIGNAL);
            return;
        }
    }
}

}  // namespace blkrig::control
