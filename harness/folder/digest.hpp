// Digests as lowercase hex of bytes in memory. SHA-256: the build cache's
// keys. XXH3-128: the crash checks' comparison of what a guest read with
// what the host reads. Both use agent_core's classes, the ones the guest
// agent reports with, so both sides hash alike.
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

// XXH3-128 as the agent reports it for what a step read (agent_core/xxh128.hpp).
std::string xxh128_hex(std::span<const uint8_t> bytes);
inline std::string xxh128_hex(std::string_view text) {
    return xxh128_hex(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace blkrig::folder
