// exFAT images: mkfs.exfat, then our own writer places the files.
#include "builders.hpp"
#include "content.hpp"
#include "exfat_writer.hpp"
#include "fat.hpp"
#include "mapped_file.hpp"
#include <fmt/format.h>
#include <cerrno>
#include <cstring>

namespace blkrig::image::detail {

ImageReport build_exfat(const DiskSpec& spec, const std::string& img) {
    std::vector<std::string> mkfs = {"mkfs.exfat"};
    if (spec.cluster_bytes) mkfs.insert(mkfs.end(), {"-c", std::to_string(*spec.cluster_bytes)});
    mkfs.push_back(img);
    run_checked(mkfs);

    std::vector<std::vector<uint64_t>> plans;
    {
        MappedFile m(img, true);
        ExfatWriter w(m.writable_bytes());
        for (size_t i = 0; i < spec.files.size(); ++i) {
            const FileSpec& f = spec.files[i];
            const auto dirs = parents(f.path);
            if (!dirs.empty()) w.mkdirs(dirs.back());
            plans.push_back(plan_runs(f, i, w.volume().cluster_bytes, "cluster"));
            ContentReader content(f.content, f.seed);
            w.add_file(f.path, f.size_bytes, plans.back(), content);
        }
        w.finish();
        m.sync();
    }
    run_checked({"fsck.exfat", "-n", img});

    ImageReport r;
    MappedFile m(img, false);
    const FatVolume v = parse_fat_volume(m.bytes());
    r.geometry = fat_geometry(v);
    for (size_t i = 0; i < spec.files.size(); ++i) {
        r.files.push_back(fat_file_extents(m.bytes(), spec.files[i].path));
        check_layout(spec.files[i], r.files.back(), v.cluster_bytes, plans[i]);
    }
    return r;
}

}  // namespace blkrig::image::detail
