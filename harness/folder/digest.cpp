#include "folder/digest.hpp"

#include "agent_core/sha256.hpp"
#include "agent_core/xxh128.hpp"

namespace blkrig::folder {

std::string sha256_hex(std::span<const uint8_t> bytes) {
    agent::Sha256 h;
    h.update(bytes.data(), bytes.size());
    return h.hex();
}

std::string xxh128_hex(std::span<const uint8_t> bytes) {
    agent::Xxh128 h;
    h.update(bytes.data(), bytes.size());
    return h.hex();
}

}  // namespace blkrig::folder
