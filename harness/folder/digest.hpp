// SHA-256 as lowercase hex of bytes in memory: the build cache's keys, and
// the crash checks' comparison of what a guest read with what the host
// reads. Streamed digests use agent::Sha256 (agent_core/sha256.hpp), the
// same Nettle digest the guest agent reports, so both sides hash alike.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace blkrig::folder {

std::string sha256_hex(std::span<const uint8_t> bytes);
inline std::string sha256_hex(std::string_view text) {
    return sha256_hex(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace blkrig::folder
