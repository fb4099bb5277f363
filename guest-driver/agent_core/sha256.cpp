#include "agent_core/sha256.hpp"

namespace blkrig::agent {

Sha256::Sha256() { sha256_init(&ctx_); }

void Sha256::update(const void* data, size_t n) {
    if (n) sha256_update(&ctx_, n, static_cast<const uint8_t*>(data));
}

Sha256::Digest Sha256::finish() {
    Digest out;
    sha256_digest(&ctx_, out.size(), out.data());
    return out;
}

std::string Sha256::hex() {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s;
    for (const uint8_t b : finish()) {
        s += kDigits[b >> 4];
        s += kDigits[b & 15];
    }
    return s;
}

}  // namespace blkrig::agent
