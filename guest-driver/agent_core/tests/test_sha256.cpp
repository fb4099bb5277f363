// SHA-256 against FIPS 180-4 vectors and against sha256sum(1) on pattern
// bytes cut at awkward sizes.
#include "agent_core/sha256.hpp"
#include "digest_by_tool.hpp"

#include <gtest/gtest.h>

#include <string>

namespace blkrig::agent {
namespace {

std::string sha(std::string_view s) {
    Sha256 h;
    h.update(s);
    return h.hex();
}

TEST(Sha256, KnownVectors) {
    EXPECT_EQ(sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(sha(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, UpdatesInPiecesEqualOneUpdate) {
    const std::string text(1000, 'x');
    for (size_t cut : {1u, 55u, 56u, 63u, 64u, 65u, 127u, 999u}) {
        Sha256 h;
        h.update(text.substr(0, cut));
        h.update(text.substr(cut));
        EXPECT_EQ(h.hex(), sha(text)) << cut;
    }
}

TEST(Sha256, PatternBytesMatchSha256sum) {
    for (size_t size : {size_t{1} << 20, size_t{12345}}) {
        const auto [data, hex] = test::pattern_digest<Sha256>(size);
        EXPECT_EQ(hex, test::digest_by_tool("sha256sum", data, 64)) << size;
    }
}

}  // namespace
}  // namespace blkrig::agent
