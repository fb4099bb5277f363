#include "cli/control_client.hpp"

#include "common/fd.hpp"
#include "launch/process.hpp"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace blkrig::cli {

namespace {
// A device that accepts and never answers must not hang the command.
constexpr int kAnswerTimeoutS = 30;
}  // namespace

nlohmann::json control_call(const std::string& path, const std::string& method, const nlohmann::json& params) {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw CallRefused("control socket path too long: " + path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw launch::LaunchError(fmt::format("cannot reach the device's control socket {}: {}", path, std::strerror(errno)));
    const timeval tv{kAnswerTimeoutS, 0};
    ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::string req = nlohmann::json{{"jsonrpc", "2.0"}, {"id", 1}, {"method", method}, {"params", params}}.dump() + "\n";
    if (::send(s.get(), req.data(), req.size(), MSG_NOSIGNAL) < 0) throw launch::LaunchError(fmt::format("writing to {}: {}", path, std::strerror(errno)));
    std::string line;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            throw launch::LaunchError(fmt::format("no answer from {} in {} s", path, kAnswerTimeoutS));
        if (n <= 0) break;
        line.append(buf, static_cast<size_t>(n));
        if (const auto nl = line.find('\n'); nl != std::string::npos) {
            line.resize(nl);
            break;
        }
    }
    const auto resp = nlohmann::json::parse(line, nullptr, false);
    if (resp.is_discarded() || !resp.is_object()) throw launch::LaunchError(fmt::format("unreadable answer from {}: {}", path, line));
    if (resp.contains("error")) {
        const auto& e = resp["error"];
        const bool has_msg = e.is_object() && e.contains("message") && e["message"].is_string();
        throw CallRefused(fmt::format("{}: {}", method, has_msg ? e["message"].get<std::string>() : e.dump()));
    }
    if (!resp.contains("result")) throw launch::LaunchError(fmt::format("answer from {} holds neither result nor error: {}", path, line));
    return resp["result"];
}

}  // namespace blkrig::cli
