// The digests a step reports: SHA-256 against FIPS 180-4 vectors, XXH3-128
// against known answers at each of XXH3's length classes (from Python's
// xxhash bindings and xxhsum); for both, updates cut at awkward places equal
// one update, and pattern bytes hash as the host's own tool (sha256sum,
// xxhsum -H2) prints them.
#include "agent_core/pattern.hpp"
#include "agent_core/sha256.hpp"
#include "agent_core/xxh128.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace blkrig::agent {
namespace {

template <class H>
std::string digest(std::string_view s) {
    H h;
    h.update(s);
    return h.hex();
}

TEST(Sha256, KnownVectors) {
    EXPECT_EQ(digest<Sha256>(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(digest<Sha256>("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(digest<Sha256>("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(digest<Sha256>(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Xxh128, KnownAnswers) {
    EXPECT_EQ(digest<Xxh128>(""), "99aa06d3014798d86001c324468d497f");
    EXPECT_EQ(digest<Xxh128>("abc"), "06b05ab6733a618578af5f94892f3950");
    EXPECT_EQ(digest<Xxh128>(std::string(1000000, 'a')), "a545df8e384a9579b1fd6fae5285c4eb");
    // Byte i is (31 i + 7) mod 256; each length is one of XXH3's paths.
    std::string t;
    for (int i = 0; i < 5000; ++i) t += static_cast<char>((i * 31 + 7) & 255);
    const std::vector<std::pair<size_t, const char*>> want = {
        {1, "495b62073ef70ca44c5cca45d0f4811f"},    {3, "46f66cb93538156515f7093b173d005c"},
        {4, "7fefeeffb4d0eab3b987ca5d9241572a"},    {8, "803c675a846cc6c256bb836ceb6d4baa"},
        {9, "d46556872d230f224376673580310154"},    {16, "650fe308c566747df853dd94614dfa07"},
        {17, "18217300b5132d5a78c349fe81b2f26c"},   {128, "b4f87b99d2db8a511e04fad9f0cacb4d"},
        {129, "6881633650cd8924c51bc887976aef63"},  {240, "de57aab31e77a2ff93e173833f75ab66"},
        {241, "92b991a7192f3f080b3b630948ce4a00"},  {1023, "8e8ed756aa1f01faf0d330ce2b3300fb"},
        {1024, "4c17271c906df79223bc880ebf0d29c6"}, {1025, "70a4eb1b9691d77fc09fdfbc398c7d82"},
        {5000, "3bf60aa89c7feeaa559fff92c2b7f8ee"},
    };
    for (const auto& [n, hex] : want) EXPECT_EQ(digest<Xxh128>(std::string_view(t).substr(0, n)), hex) << n;
}

// The host's tool for each digest, and how many hex digits it prints.
template <class H>
struct Tool;
template <>
struct Tool<Sha256> {
    static constexpr const char* command = "sha256sum";
    static constexpr size_t width = 64;
};
template <>
struct Tool<Xxh128> {
    static constexpr const char* command = "xxhsum -H2";
    static constexpr size_t width = 32;
};

// What `command FILE` prints first for the bytes in FILE.
std::string by_tool(const std::string& command, const std::vector<uint8_t>& data, size_t width) {
    char path[] = "/tmp/blkrig-digest-XXXXXX";
    const int fd = ::mkstemp(path);
    if (fd < 0) return "mkstemp failed";
    ::close(fd);
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    FILE* p = ::popen((command + " " + path).c_str(), "r");
    std::string out(width, '\0');
    const size_t n = p ? std::fread(out.data(), 1, width, p) : 0;
    if (p) ::pclose(p);
    std::remove(path);
    out.resize(n);
    return out;
}

template <class H>
class Digest : public ::testing::Test {};
using Digests = ::testing::Types<Sha256, Xxh128>;
TYPED_TEST_SUITE(Digest, Digests);

// Cuts at each side of both digests' block and buffer sizes.
TYPED_TEST(Digest, UpdatesInPiecesEqualOneUpdate) {
    std::string text;
    for (int i = 0; i < 3000; ++i) text += static_cast<char>(i * 7);
    for (size_t cut : {1u, 16u, 17u, 55u, 56u, 63u, 64u, 65u, 127u, 240u, 241u, 255u, 256u, 1024u, 2999u}) {
        TypeParam h;
        h.update(std::string_view(text).substr(0, cut));
        h.update(std::string_view(text).substr(cut));
        EXPECT_EQ(h.hex(), digest<TypeParam>(text)) << cut;
    }
}

// In 4 KiB pieces with an odd first one, as the agent's reads come.
TYPED_TEST(Digest, PatternBytesMatchTheHostsTool) {
    for (size_t size : {size_t{1} << 20, size_t{12345}}) {
        std::vector<uint8_t> data(size);
        pattern::Stream(pattern::Kind::random, 1).fill(data.data(), data.size());
        TypeParam h;
        size_t pos = 0;
        for (size_t n = 1000; pos < data.size(); n = 4096) {
            n = std::min(n, data.size() - pos);
            h.update(data.data() + pos, n);
            pos += n;
        }
        EXPECT_EQ(h.hex(), by_tool(Tool<TypeParam>::command, data, Tool<TypeParam>::width)) << size;
    }
}

}  // namespace
}  // namespace blkrig::agent
