// SHA-256 against FIPS 180-4 vectors and against sha256sum(1) on pattern
// bytes cut at awkward sizes.
#include "agent_core/pattern.hpp"
#include "agent_core/sha256.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

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

// sha256sum of the same bytes, written to a temporary file.
std::string sha256sum(const std::vector<uint8_t>& data) {
    char path[] = "/tmp/blkrig-sha256-XXXXXX";
    const int fd = ::mkstemp(path);
    if (fd < 0) return "mkstemp failed";
    ::close(fd);
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    FILE* p = ::popen((std::string("sha256sum ") + path).c_str(), "r");
    char out[65] = {};
    const size_t n = p ? std::fread(out, 1, 64, p) : 0;
    if (p) ::pclose(p);
    std::remove(path);
    return std::string(out, n);
}

TEST(Sha256, PatternBytesMatchSha256sum) {
    for (size_t size : {size_t{1} << 20, size_t{12345}}) {
        std::vector<uint8_t> data(size);
        pattern::Stream(pattern::Kind::random, 1).fill(data.data(), data.size());
        Sha256 h;
        // In 4 KiB pieces with an odd first one, as the agent's reads come.
        size_t pos = 0;
        for (size_t n = 1000; pos < data.size(); n = 4096) {
            n = std::min(n, data.size() - pos);
            h.update(data.data() + pos, n);
            pos += n;
        }
        EXPECT_EQ(h.hex(), sha256sum(data)) << size;
    }
}

}  // namespace
}  // namespace blkrig::agent
