// XXH3-128 as `xxhsum -H2` prints it: known answers at each of XXH3's
// length classes (taken from Python's xxhash bindings and xxhsum), pieces
// cut at awkward sizes, and xxhsum(1) itself on pattern bytes.
#include "agent_core/xxh128.hpp"
#include "digest_by_tool.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace blkrig::agent {
namespace {

std::string xxh(std::string_view s) {
    Xxh128 h;
    h.update(s);
    return h.hex();
}

TEST(Xxh128, KnownAnswers) {
    EXPECT_EQ(xxh(""), "99aa06d3014798d86001c324468d497f");
    EXPECT_EQ(xxh("abc"), "06b05ab6733a618578af5f94892f3950");
    EXPECT_EQ(xxh(std::string(1000000, 'a')), "a545df8e384a9579b1fd6fae5285c4eb");
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
    for (const auto& [n, hex] : want) EXPECT_EQ(xxh(std::string_view(t).substr(0, n)), hex) << n;
}

TEST(Xxh128, UpdatesInPiecesEqualOneUpdate) {
    std::string text;
    for (int i = 0; i < 3000; ++i) text += static_cast<char>(i * 7);
    for (size_t cut : {1u, 16u, 17u, 240u, 241u, 255u, 256u, 1024u, 2999u}) {
        Xxh128 h;
        h.update(std::string_view(text).substr(0, cut));
        h.update(std::string_view(text).substr(cut));
        EXPECT_EQ(h.hex(), xxh(text)) << cut;
    }
}

TEST(Xxh128, PatternBytesMatchXxhsum) {
    for (size_t size : {size_t{1} << 20, size_t{12345}}) {
        const auto [data, hex] = test::pattern_digest<Xxh128>(size);
        EXPECT_EQ(hex, test::digest_by_tool("xxhsum -H2", data, 32)) << size;
    }
}

}  // namespace
}  // namespace blkrig::agent
