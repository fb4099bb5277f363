#include "run/initramfs.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>

namespace blkrig::run {

namespace fs = std::filesystem;

std::optional<InitramfsFile> parse_initramfs_file(const std::string& spec, std::string* error) {
    const size_t colon = spec.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 >= spec.size() || spec[colon + 1] != '/') {
        *error = fmt::format("'{}' is not SRC:/ABSOLUTE/DEST", spec);
        return std::nullopt;
    }
    InitramfsFile f{spec.substr(0, colon), spec.substr(colon + 1)};
    if (f.dest.back() == '/' || f.dest.find("..") != std::string::npos || f.dest.find("//") != std::string::npos) {
        *error = fmt::format("'{}': bad destination '{}'", spec, f.dest);
        return std::nullopt;
    }
    return f;
}

namespace {

struct ArchiveFree {
    void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryFree {
    void operator()(archive_entry* e) const { archive_entry_free(e); }
};

// What goes in: each directory once, then the file, all in path order.
struct Item {
    bool dir = true;
    std::string bytes;
};

}  // namespace

std::optional<std::string> append_to_initramfs(const fs::path& image, const std::vector<InitramfsFile>& files) {
    std::map<std::string, Item> items;  // path without its leading '/', sorted
    for (const auto& f : files) {
        if (f.dest.empty() || f.dest[0] != '/') return fmt::format("{}: the destination '{}' is not absolute", f.source.string(), f.dest);
        std::ifstream in(f.source, std::ios::binary);
        std::error_code ec;
        if (!in || !fs::is_regular_file(f.source, ec)) return fmt::format("{}: not a readable file", f.source.string());
        Item file{false, std::string(std::istreambuf_iterator<char>(in), {})};
        if (in.bad()) return fmt::format("{}: cannot read it", f.source.string());
        const std::string rel = f.dest.substr(1);
        for (size_t at = rel.find('/'); at != std::string::npos; at = rel.find('/', at + 1)) {
            auto [it, fresh] = items.try_emplace(rel.substr(0, at));
            if (!fresh && !it->second.dir) return fmt::format("{}: '/{}' is also a file", f.source.string(), it->first);
        }
        if (items.count(rel)) return fmt::format("{}: '{}' is given twice, or is also a directory", f.source.string(), f.dest);
        items.emplace(rel, std::move(file));
    }

    // Built in memory first, so that a failure leaves the image untouched.
    std::unique_ptr<archive, ArchiveFree> a(archive_write_new());
    if (!a) return std::string("libarchive: out of memory");
    std::string out;
    struct Sink {
        static la_ssize_t write(archive*, void* data, const void* buf, size_t n) {
            static_cast<std::string*>(data)->append(static_cast<const char*>(buf), n);
            return static_cast<la_ssize_t>(n);
        }
    };
    // No blocking: the archive ends at its trailer (the kernel would skip
    // zeros after it, but they would only cost unpacking time).
    if (archive_write_set_format_cpio_newc(a.get()) != ARCHIVE_OK || archive_write_add_filter_none(a.get()) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(a.get(), 0) != ARCHIVE_OK ||
        archive_write_open(a.get(), &out, nullptr, &Sink::write, nullptr) != ARCHIVE_OK)
        return fmt::format("libarchive: {}", archive_error_string(a.get()) ? archive_error_string(a.get()) : "cannot start a newc archive");
    int64_t ino = 1;
    for (const auto& [path, item] : items) {
        std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
        archive_entry_set_pathname(e.get(), path.c_str());
        archive_entry_set_filetype(e.get(), item.dir ? AE_IFDIR : AE_IFREG);
        archive_entry_set_perm(e.get(), item.dir ? 0755 : 0644);
        archive_entry_set_uid(e.get(), 0);
        archive_entry_set_gid(e.get(), 0);
        archive_entry_set_mtime(e.get(), 0, 0);
        archive_entry_set_nlink(e.get(), item.dir ? 2 : 1);
        archive_entry_set_ino64(e.get(), ino++);
        archive_entry_set_size(e.get(), static_cast<la_int64_t>(item.bytes.size()));
        if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK ||
            (!item.dir && archive_write_data(a.get(), item.bytes.data(), item.bytes.size()) != static_cast<la_ssize_t>(item.bytes.size())))
            return fmt::format("libarchive: writing /{}: {}", path, archive_error_string(a.get()) ? archive_error_string(a.get()) : "failed");
    }
    if (archive_write_close(a.get()) != ARCHIVE_OK)
        return fmt::format("libarchive: {}", archive_error_string(a.get()) ? archive_error_string(a.get()) : "cannot close the archive");

    // The kernel looks for the next archive's magic at a 4-byte boundary
    // only, skipping the zeros before it (init/initramfs.c).
    std::error_code ec;
    const auto size = fs::file_size(image, ec);
    if (ec) return fmt::format("{}: {}", image.string(), ec.message());
    out.insert(0, (4 - size % 4) % 4, '\0');
    std::ofstream o(image, std::ios::binary | std::ios::app);
    if (!o) return fmt::format("{}: cannot open it to append: {}", image.string(), std::strerror(errno));
    o.write(out.data(), static_cast<std::streamsize>(out.size()));
    o.close();
    if (!o) {
        fs::resize_file(image, size, ec);  // as it was
        return fmt::format("{}: cannot append to it: {}", image.string(), std::strerror(errno));
    }
    return std::nullopt;
}

}  // namespace blkrig::run
