#include "run/initramfs.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <type_traits>

namespace blkrig::run {

namespace fs = std::filesystem;

namespace {

// libarchive is opened when a run first appends, not linked: it brings
// libxml2 and ICU, whose loading would slow every blkrig command's start-up
// (docs/architecture.md; as libvirt's would, launch/libvirt.cpp).
struct ArchiveApi {
    decltype(&::archive_write_new) write_new;
    decltype(&::archive_write_free) write_free;
    decltype(&::archive_write_set_format_cpio_newc) set_format_cpio_newc;
    decltype(&::archive_write_add_filter_none) add_filter_none;
    decltype(&::archive_write_set_bytes_per_block) set_bytes_per_block;
    decltype(&::archive_write_open) write_open;
    decltype(&::archive_write_header) write_header;
    decltype(&::archive_write_data) write_data;
    decltype(&::archive_write_close) write_close;
    decltype(&::archive_error_string) error_string;
    decltype(&::archive_entry_new) entry_new;
    decltype(&::archive_entry_free) entry_free;
    decltype(&::archive_entry_set_pathname) entry_set_pathname;
    decltype(&::archive_entry_set_filetype) entry_set_filetype;
    decltype(&::archive_entry_set_perm) entry_set_perm;
    decltype(&::archive_entry_set_uid) entry_set_uid;
    decltype(&::archive_entry_set_gid) entry_set_gid;
    decltype(&::archive_entry_set_mtime) entry_set_mtime;
    decltype(&::archive_entry_set_nlink) entry_set_nlink;
    decltype(&::archive_entry_set_ino64) entry_set_ino64;
    decltype(&::archive_entry_set_size) entry_set_size;
};

// The API, or nullptr and why.
const ArchiveApi* la(std::string& why) {
    static std::string error;
    static const std::optional<ArchiveApi> api = []() -> std::optional<ArchiveApi> {
        void* h = ::dlopen("libarchive.so.13", RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            error = fmt::format("a run's initramfs needs libarchive (Debian package libarchive13): {}", ::dlerror());
            return std::nullopt;
        }
        ArchiveApi a{};
        bool ok = true;
        auto load = [&](auto& fn, const char* name) {
            fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(h, name));
            if (!fn && ok) {
                error = fmt::format("libarchive.so.13 has no {}", name);
                ok = false;
            }
        };
        load(a.write_new, "archive_write_new");
        load(a.write_free, "archive_write_free");
        load(a.set_format_cpio_newc, "archive_write_set_format_cpio_newc");
        load(a.add_filter_none, "archive_write_add_filter_none");
        load(a.set_bytes_per_block, "archive_write_set_bytes_per_block");
        load(a.write_open, "archive_write_open");
        load(a.write_header, "archive_write_header");
        load(a.write_data, "archive_write_data");
        load(a.write_close, "archive_write_close");
        load(a.error_string, "archive_error_string");
        load(a.entry_new, "archive_entry_new");
        load(a.entry_free, "archive_entry_free");
        load(a.entry_set_pathname, "archive_entry_set_pathname");
        load(a.entry_set_filetype, "archive_entry_set_filetype");
        load(a.entry_set_perm, "archive_entry_set_perm");
        load(a.entry_set_uid, "archive_entry_set_uid");
        load(a.entry_set_gid, "archive_entry_set_gid");
        load(a.entry_set_mtime, "archive_entry_set_mtime");
        load(a.entry_set_nlink, "archive_entry_set_nlink");
        load(a.entry_set_ino64, "archive_entry_set_ino64");
        load(a.entry_set_size, "archive_entry_set_size");
        if (!ok) return std::nullopt;
        return a;
    }();
    if (!api) why = error;
    return api ? &*api : nullptr;
}

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
        if (f.dest.back() == '/' || f.dest.find("..") != std::string::npos || f.dest.find("//") != std::string::npos)
            return fmt::format("{}: bad destination '{}'", f.source.string(), f.dest);
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
    std::string why;
    const ArchiveApi* api = la(why);
    if (!api) return why;
    const ArchiveApi& L = *api;
    auto free_archive = [&L](archive* x) { L.write_free(x); };
    auto free_entry = [&L](archive_entry* x) { L.entry_free(x); };
    std::unique_ptr<archive, decltype(free_archive)> a(L.write_new(), free_archive);
    if (!a) return std::string("libarchive: out of memory");
    auto err = [&] { return std::string(L.error_string(a.get()) ? L.error_string(a.get()) : "failed"); };
    std::string out;
    struct Sink {
        static la_ssize_t write(archive*, void* data, const void* buf, size_t n) {
            static_cast<std::string*>(data)->append(static_cast<const char*>(buf), n);
            return static_cast<la_ssize_t>(n);
        }
    };
    // No blocking: the archive ends at its trailer (the kernel would skip
    // zeros after it, but they would only cost unpacking time).
    if (L.set_format_cpio_newc(a.get()) != ARCHIVE_OK || L.add_filter_none(a.get()) != ARCHIVE_OK ||
        L.set_bytes_per_block(a.get(), 0) != ARCHIVE_OK || L.write_open(a.get(), &out, nullptr, &Sink::write, nullptr) != ARCHIVE_OK)
        return fmt::format("libarchive: starting a newc archive: {}", err());
    int64_t ino = 1;
    for (const auto& [path, item] : items) {
        std::unique_ptr<archive_entry, decltype(free_entry)> e(L.entry_new(), free_entry);
        if (!e) return std::string("libarchive: out of memory");
        L.entry_set_pathname(e.get(), path.c_str());
        L.entry_set_filetype(e.get(), item.dir ? AE_IFDIR : AE_IFREG);
        L.entry_set_perm(e.get(), item.dir ? 0755 : 0644);
        L.entry_set_uid(e.get(), 0);
        L.entry_set_gid(e.get(), 0);
        L.entry_set_mtime(e.get(), 0, 0);
        L.entry_set_nlink(e.get(), item.dir ? 2 : 1);
        L.entry_set_ino64(e.get(), ino++);
        L.entry_set_size(e.get(), static_cast<la_int64_t>(item.bytes.size()));
        if (L.write_header(a.get(), e.get()) != ARCHIVE_OK ||
            (!item.dir && L.write_data(a.get(), item.bytes.data(), item.bytes.size()) != static_cast<la_ssize_t>(item.bytes.size())))
            return fmt::format("libarchive: writing /{}: {}", path, err());
    }
    if (L.write_close(a.get()) != ARCHIVE_OK) return fmt::format("libarchive: closing the archive: {}", err());

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
