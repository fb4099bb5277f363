// SHA-256 as lowercase hex, of bytes in memory or streamed: the build
// cache's keys, and the crash checks' comparison of what a guest read with
// what the host reads. The same Nettle digest the guest agent reports
// (agent_core/sha256.hpp), so both sides hash alike.
#pragma once

#include "agent_core/sha256.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace blkrig::folder {

class Sha256 {
public:
    void update(std::span<const uint8_t> bytes);
    std::string hex();  // ends the digest

private:
    agent::Sha256 h_;
};

std::string sha256_hex(std::span<const uint8_t> bytes);
inline std::string sha256_hex(std::string_view text) {
    return sha256_hex(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace blkrig::folder
