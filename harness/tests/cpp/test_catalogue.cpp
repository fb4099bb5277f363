// The kernel catalogue's reader: the shipped file, and each mistake a
// hand edit can make named with its line.
#include "run/catalogue.hpp"

#include <gtest/gtest.h>

#include <string>

using namespace blkrig::run;

namespace {

const char* kGood = R"(default = "b"
[[kernel]]
name = "a"
summary = "A"
suite = "bookworm"
package = "linux-image-amd64"
[[kernel]]
name = "b"
summary = "B"
suite = "trixie"
package = "linux-image-cloud-amd64"
)";

std::string error_of(const std::string& text) {
    try {
        parse_catalogue(text, "cat.toml");
    } catch (const CatalogueError& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(Catalogue, Parses) {
    const auto c = parse_catalogue(kGood, "cat.toml");
    EXPECT_EQ(c.default_name, "b");
    ASSERT_EQ(c.kernels.size(), 2u);
    EXPECT_EQ(c.kernels[1].suite, "trixie");
    EXPECT_EQ(c.kernels[0].package, "linux-image-amd64");
    EXPECT_EQ(c.names(), "a b");
    EXPECT_EQ(c.find("a")->summary, "A");
    EXPECT_EQ(c.find("c"), nullptr);
}

TEST(Catalogue, TheShippedFileParsesAndHoldsItsDefault) {
    const auto& c = catalogue();
    ASSERT_FALSE(c.kernels.empty());
    EXPECT_NE(c.find(c.default_name), nullptr);
    EXPECT_NE(c.find("debian-bookworm-cloud"), nullptr);
}

TEST(Catalogue, MistakesAreNamedWithTheirLine) {
    std::string t = kGood;
    EXPECT_EQ(error_of(std::string(t).replace(t.find("default = \"b\""), 13, "default = \"z\"")),
              "cat.toml: default 'z' is not a listed kernel (a b)");
    EXPECT_EQ(error_of(std::string(t).replace(t.find("name = \"b\""), 10, "name = \"a\"")), "cat.toml:7: kernel 'a' is listed twice");
    EXPECT_EQ(error_of(std::string(t).replace(t.find("suite = \"trixie\"\n"), 17, "")), "cat.toml:7: missing suite");
    EXPECT_EQ(error_of(std::string(t).replace(t.find("suite = \"trixie\""), 16, "suite = 3")),
              "cat.toml:7: suite must be a non-empty string");
    EXPECT_EQ(error_of(std::string(t).replace(t.find("name = \"a\""), 10, "name = \"A/b\"")),
              "cat.toml:2: kernel name 'A/b' may hold only a-z, 0-9, '.' and '-'");
    EXPECT_EQ(error_of(t + "sute = \"x\"\n"), "cat.toml:12: unknown key kernel.sute");
    EXPECT_EQ(error_of("dfault = \"a\"\n" + t), "cat.toml:1: unknown key dfault");
    EXPECT_EQ(error_of("default = \"a\"\n"), "cat.toml: no [[kernel]] entries");
    EXPECT_NE(error_of("default = \n").find("cat.toml:1: "), std::string::npos);
}
