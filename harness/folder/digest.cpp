#include "folder/digest.hpp"

namespace blkrig::folder {

void Sha256::update(std::span<const uint8_t> bytes) { h_.update(bytes.data(), bytes.size()); }

std::string Sha256::hex() { return h_.hex(); }

std::string sha256_hex(std::span<const uint8_t> bytes) {
    Sha256 h;
    h.update(bytes);
    return h.hex();
}

}  // namespace blkrig::folder
