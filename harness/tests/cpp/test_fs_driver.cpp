// The driver choice for a scenario's disk: ext2 goes through fs/ext2
// (ext2mpage) when the kernel folder has the module and "auto" or "ext2" is
// asked, through ext4 otherwise; "ext2" without the module is an error
// naming the scenario line and the fetch command.
#include "run/fs_driver.hpp"

#include "common/temp_dir.hpp"

#include <gtest/gtest.h>

#include <fstream>

namespace blkrig::run {
namespace {

namespace fs = std::filesystem;

scenario::Scenario ext2_scenario(const std::string& driver) {
    const std::string text = "[disk]\nfs = \"ext2\"\n[guest]\next2_driver = \"" + driver + "\"\n[[steps]]\nop = \"mount\"\n";
    return scenario::parse_scenario(text, "e.toml");
}

struct Kernel {
    TempDir dir;
    explicit Kernel(bool ext2) {
        fs::create_directories(fs::path(dir.file("modules")) / "extra");
        if (ext2) std::ofstream(ext2_module_path(dir.file(""))) << "";
    }
    fs::path path() const { return dir.file(""); }
};

FsDriver chosen(const scenario::Scenario& sc, const Kernel& k) {
    auto r = fs_driver(sc, k.path(), "k");
    if (auto* e = std::get_if<std::string>(&r)) ADD_FAILURE() << *e;
    return std::get<FsDriver>(r);
}

TEST(FsDriver, AutoTakesFsExt2WhenTheKernelHasIt) {
    const Kernel with(true), without(false);
    const auto a = chosen(ext2_scenario("auto"), with);
    EXPECT_EQ(a.fstype, "ext2mpage");
    EXPECT_EQ(a.driver, "ext2");
    EXPECT_EQ(a.modules, std::vector<std::string>{"ext2mpage"});
    const auto b = chosen(ext2_scenario("auto"), without);
    EXPECT_EQ(b.fstype, "ext4");
    EXPECT_EQ(b.driver, "ext4");
    EXPECT_NE(b.why.find("no ext2 module"), std::string::npos) << b.why;
}

TEST(FsDriver, Ext4ForcedEvenWithTheModule) {
    const Kernel with(true);
    const auto d = chosen(ext2_scenario("ext4"), with);
    EXPECT_EQ(d.fstype, "ext4");
    EXPECT_EQ(d.modules, std::vector<std::string>{"ext4"});
}

TEST(FsDriver, Ext2WithoutTheModuleNamesTheLineAndTheFix) {
    const Kernel without(false);
    auto r = fs_driver(ext2_scenario("ext2"), without.path(), "debian-trixie");
    ASSERT_TRUE(std::holds_alternative<std::string>(r));
    const auto& e = std::get<std::string>(r);
    EXPECT_EQ(e.rfind("e.toml:4: guest.ext2_driver = \"ext2\"", 0), 0u) << e;
    EXPECT_NE(e.find("blkrig kernel fetch debian-trixie --extra-modules ext2"), std::string::npos) << e;
}

TEST(FsDriver, OtherFilesystemsKeepTheirDrivers) {
    const Kernel with(true);
    auto sc = scenario::parse_scenario("[disk]\nfs = \"vfat\"\n[[steps]]\nop = \"mount\"\n", "v.toml");
    const auto v = chosen(sc, with);
    EXPECT_EQ(v.fstype, "vfat");
    EXPECT_EQ(v.modules, (std::vector<std::string>{"vfat", "nls_cp437", "nls_ascii"}));
    sc.disk.fs = "raw";
    EXPECT_EQ(chosen(sc, with).fstype, "");
}

}  // namespace
}  // namespace blkrig::run
