// SHA-256 (FIPS 180-4) of the bytes a step read or wrote.
//
// Hand-written because the agent is linked statically and Debian packages no
// static crypto library it could use (OpenSSL's and nettle's .a files are not
// shipped); SHA-256 is small enough to carry.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace blkrig::agent {

class Sha256 {
public:
    using Digest = std::array<uint8_t, 32>;

    Sha256();
    void update(const void* data, size_t n);
    void update(std::string_view s) { update(s.data(), s.size()); }
    // Ends the hash; the object must not be updated afterwards.
    Digest finish();
    // finish() as 64 lowercase hex digits, as sha256sum prints it.
    std::string hex();

private:
    void block(const uint8_t* p);

    std::array<uint32_t, 8> h_;
    std::array<uint8_t, 64> buf_{};
    size_t buffered_ = 0;
    uint64_t total_ = 0;
};

}  // namespace blkrig::agent
