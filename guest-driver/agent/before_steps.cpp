#include "before_steps.hpp"

#include "step_ops.hpp"
#include "sys.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <vector>

namespace blkrig::agent {

namespace {

// Read-only, and for ext4 without the journal: a mount that replays a
// journal or sets a dirty bit would write, and the steps would then see a
// disk the scenario did not describe.
MountOptions check_mount_options(const ExtentCheck& c) {
    MountOptions m = split_mount_options(c.options);
    m.flags |= MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    if (c.fstype == "ext4" || c.fstype == "ext3") m.data += m.data.empty() ? "noload" : ",noload";
    return m;
}

ExtentCheckResult check_extents(const ExtentCheck& c, const std::string& disk) {
    ExtentCheckResult out;
    std::error_code ec;
    std::filesystem::create_directories(c.mountpoint, ec);
    if (ec) {
        out.error = "mkdir -p " + c.mountpoint + ": " + ec.message();
        return out;
    }
    const MountOptions m = check_mount_options(c);
    if (::mount(disk.c_str(), c.mountpoint.c_str(), c.fstype.c_str(), m.flags, m.data.empty() ? nullptr : m.data.c_str()) != 0) {
        out.error = SysError("mount -t " + c.fstype + " -o ro," + m.data + " " + disk + " on", c.mountpoint, errno).what();
        return out;
    }
    for (const auto& path : c.files) {
        StepResult r;
        map_extents(c.mountpoint + path, r);
        out.files.emplace_back(path, std::move(r));
    }
    // The superblock, its inodes and their cached mappings go with it.
    if (::umount2(c.mountpoint.c_str(), 0) != 0) {
        out.error = SysError("umount", c.mountpoint, errno).what();
        return out;
    }
    ::rmdir(c.mountpoint.c_str());
    return out;
}

// Pages of the block device's page cache that are resident: mincore on a
// mapping of the whole device, which reads nothing.
bool count_resident(int fd, uint64_t bytes, uint64_t& resident, std::string& error) {
    if (bytes == 0) {
        resident = 0;
        return true;
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        error = SysError("mmap", "the disk", errno).what();
        return false;
    }
    const long page = ::sysconf(_SC_PAGESIZE);
    std::vector<unsigned char> vec((bytes + page - 1) / page);
    const int rc = ::mincore(p, bytes, vec.data());
    const int err = errno;
    ::munmap(p, bytes);
    if (rc != 0) {
        error = SysError("mincore", "the disk", err).what();
        return false;
    }
    resident = 0;
    for (unsigned char v : vec) resident += v & 1;
    return true;
}

// Buffers in kB, as /proc/meminfo prints it: sysinfo's bufferram, one
// number without the file's dozens of others to format.
int64_t buffers_kb() {
    struct sysinfo si {};
    if (::sysinfo(&si) != 0) return -1;
    return static_cast<int64_t>(static_cast<uint64_t>(si.bufferram) * si.mem_unit / 1024);
}

// Buffers is every block device's page cache together, so 0 there is 0 for
// this disk without the mincore pass, which costs a page-cache lookup per
// page of the disk (milliseconds per 64 MiB under TCG).
bool count_disk(int fd, uint64_t bytes, int64_t buffers, uint64_t& resident, std::string& error) {
    if (buffers == 0) {
        resident = 0;
        return true;
    }
    return count_resident(fd, bytes, resident, error);
}

// Whatever the kernel read at boot (the partition scan) or the extent
// check left: dropped, so step 0 finds the disk's cache empty either way.
void drop_disk_cache(int fd, const std::string& disk, BeforeSteps& b) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
        b.cache_error = SysError("ioctl BLKGETSIZE64", disk, errno).what();
        return;
    }
    const long page = ::sysconf(_SC_PAGESIZE);
    b.disk_pages = (bytes + page - 1) / page;
    b.buffers_kb_before = buffers_kb();
    if (!count_disk(fd, bytes, b.buffers_kb_before, b.resident_before, b.cache_error)) return;
    // BLKFLSBUF writes back (nothing is dirty here) and invalidates the
    // device's cache. The extent check's inodes and dentries went with its
    // umount, so drop_caches would free nothing more of the disk's, at a
    // cost under TCG; the counts after (resident pages, Buffers) prove it.
    if (::ioctl(fd, BLKFLSBUF, 0) != 0) {
        b.cache_error = SysError("ioctl BLKFLSBUF", disk, errno).what();
        return;
    }
    b.buffers_kb_after = buffers_kb();
    count_disk(fd, bytes, b.buffers_kb_after, b.resident_after, b.cache_error);
}

}  // namespace

BeforeSteps prepare_disk(const RunSpec& spec, int disk_fd) {
    BeforeSteps b;
    b.t_start_ns = monotonic_ns();
    if (spec.extent_check) b.extent_check = check_extents(*spec.extent_check, spec.disk);
    drop_disk_cache(disk_fd, spec.disk, b);
    b.t_end_ns = monotonic_ns();
    return b;
}

}  // namespace blkrig::agent
