// The CLI's JSON-RPC client: one call to a running device's control socket
// (`blkrig fault ...`, docs/faults.md, "Control socket").
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

namespace blkrig::cli {

// The device answered with an error (a refused rule, an unknown id), or the
// path cannot be a socket: the user's to fix, exit 2. A device that is not
// there, or does not answer, is launch::LaunchError.
struct CallRefused : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The call's result.
nlohmann::json control_call(const std::string& path, const std::string& method, const nlohmann::json& params);

}  // namespace blkrig::cli
