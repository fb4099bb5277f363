#include "run/fs_driver.hpp"

#include <fmt/format.h>

namespace blkrig::run {

namespace fs = std::filesystem;

fs::path ext2_module_path(const fs::path& kernel_dir) { return kernel_dir / "modules" / "extra" / (std::string(kExt2Module) + ".ko"); }

std::variant<FsDriver, std::string> fs_driver(const scenario::Scenario& sc, const fs::path& kernel_dir, const std::string& kernel_name) {
    const std::string& f = sc.disk.fs;
    if (f == "raw") return FsDriver{"", "", {}, "raw disk: nothing is mounted"};
    if (f == "vfat") return FsDriver{"vfat", "vfat", {"vfat", "nls_cp437", "nls_ascii"}, "disk.fs"};
    if (f == "exfat") return FsDriver{"exfat", "exfat", {"exfat", "nls_ascii"}, "disk.fs"};
    if (f == "ext4") return FsDriver{"ext4", "ext4", {"ext4"}, "disk.fs"};
    // ext2
    std::error_code ec;
    const bool have = fs::is_regular_file(ext2_module_path(kernel_dir), ec);
    const std::string& want = sc.guest.ext2_driver;
    if (want == "ext2" && !have)
        return fmt::format("{}:{}: guest.ext2_driver = \"ext2\" but kernel {} has no ext2 module ({} is missing); build it with "
                           "blkrig kernel fetch {} --extra-modules ext2, or use ext2_driver = \"auto\"",
                           sc.file, sc.guest.ext2_driver_line, kernel_name, ext2_module_path(kernel_dir).string(), kernel_name);
    if (want == "ext2" || (want == "auto" && have))
        return FsDriver{kExt2Module, "ext2", {kExt2Module},
                        want == "ext2" ? "guest.ext2_driver = \"ext2\"" : "guest.ext2_driver = \"auto\": the kernel has fs/ext2 as module ext2mpage"};
    return FsDriver{"ext4", "ext4", {"ext4"},
                    want == "ext4" ? "guest.ext2_driver = \"ext4\""
                                   : "guest.ext2_driver = \"auto\": the kernel has no ext2 module, ext4's driver mounts ext2 (CONFIG_EXT4_USE_FOR_EXT2)"};
}

}  // namespace blkrig::run
