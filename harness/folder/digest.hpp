// SHA-256 as lowercase hex (OpenSSL's EVP), of bytes in memory or streamed:
// the build cache's keys, and the crash checks' comparison of what a guest
// read with what the host reads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace blkrig::folder {

class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(std::span<const uint8_t> bytes);
    std::string hex();  // ends the digest

private:
    evp_md_ctx_st* ctx_;
};

std::string sha256_hex(std::span<const uint8_t> bytes);
inline std::string sha256_hex(std::string_view text) {
    return sha256_hex(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace blkrig::folder
