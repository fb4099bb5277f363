// FAT: Microsoft "FAT32 File System Specification" 1.03 (BPB, FAT entries,
// directory entries, long names). exFAT: Microsoft "exFAT file system
// specification" (main boot sector, entry sets).
#include "fat.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace blkrig::image {

namespace {

uint64_t le(Bytes b, uint64_t off, unsigned n) {
    if (off > b.size() || n > b.size() - off)
        throw FormatError(fmt::format("read of {} bytes at {} is past the image end ({} bytes)", n, off, b.size()));
    uint64_t v = 0;
    for (unsigned k = 0; k < n; ++k) v |= uint64_t(b[off + k]) << (8 * k);
    return v;
}
uint16_t le16(Bytes b, uint64_t off) { return static_cast<uint16_t>(le(b, off, 2)); }
uint32_t le32(Bytes b, uint64_t off) { return static_cast<uint32_t>(le(b, off, 4)); }

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool same_name(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return ascii_lower(x) == ascii_lower(y);
           });
}

void append_utf8(std::string& s, uint32_t c) {
    if (c < 0x80) {
        s += static_cast<char>(c);
    } else if (c < 0x800) {
        s += static_cast<char>(0xC0 | (c >> 6));
        s += static_cast<char>(0x80 | (c & 0x3F));
    } else {
        s += static_cast<char>(0xE0 | (c >> 12));
        s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
        s += static_cast<char>(0x80 | (c & 0x3F));
    }
}

FatVolume parse_exfat(Bytes b) {
    FatVolume v;
    v.exfat = true;
    v.bits = 32;
    const unsigned sector_shift = b[108];
    const unsigned cluster_shift = b[109];
    if (sector_shift < 9 || sector_shift > 12 || cluster_shift > 25 - sector_shift)
        throw FormatError("exFAT: bad sector or cluster shift");
    v.sector_bytes = 1u << sector_shift;
    v.cluster_bytes = v.sector_bytes << cluster_shift;
    v.volume_bytes = le(b, 72, 8) << sector_shift;
    v.fat_offset = uint64_t(le32(b, 80)) << sector_shift;
    v.fat_bytes = uint64_t(le32(b, 84)) << sector_shift;
    v.heap_offset = uint64_t(le32(b, 88)) << sector_shift;
    v.clusters = le32(b, 92);
    v.root_cluster = le32(b, 96);
    v.fats = b[110];
    if (v.fats != 1 && v.fats != 2) throw FormatError("exFAT: NumberOfFats must be 1 or 2");
    // With two FATs, VolumeFlags.ActiveFat picks the one in use.
    if (v.fats == 2 && (le16(b, 106) & 1)) v.fat_offset += v.fat_bytes;
    if (v.heap_offset + uint64_t(v.clusters) * v.cluster_bytes > b.size())
        throw FormatError("exFAT: the cluster heap reaches past the image");
    if (!v.valid_cluster(v.root_cluster)) throw FormatError("exFAT: bad root directory cluster");
    return v;
}

}  // namespace

FatVolume parse_fat_volume(Bytes b) {
    if (b.size() < 512) throw FormatError("image smaller than one sector");
    if (b[510] != 0x55 || b[511] != 0xAA) throw FormatError("no boot sector signature (55 AA)");
    if (std::memcmp(b.data() + 3, "EXFAT   ", 8) == 0) return parse_exfat(b);

    FatVolume v;
    v.sector_bytes = le16(b, 11);
    const unsigned spc = b[13];
    const uint32_t reserved = le16(b, 14);
    v.fats = b[16];
    const uint32_t root_entries = le16(b, 17);
    uint64_t total = le16(b, 19);
    if (total == 0) total = le32(b, 32);
    uint64_t fat_sectors = le16(b, 22);
    if (fat_sectors == 0) fat_sectors = le32(b, 36);
    if (v.sector_bytes < 512 || v.sector_bytes > 4096 || (v.sector_bytes & (v.sector_bytes - 1)))
        throw FormatError(fmt::format("bad bytes per sector {}", v.sector_bytes));
    if (spc == 0 || (spc & (spc - 1))) throw FormatError(fmt::format("bad sectors per cluster {}", spc));
    if (v.fats == 0 || reserved == 0 || fat_sectors == 0 || total == 0) throw FormatError("not a FAT boot sector");
    v.cluster_bytes = v.sector_bytes * spc;
    v.volume_bytes = total * v.sector_bytes;

    const uint64_t root_sectors = (uint64_t(root_entries) * 32 + v.sector_bytes - 1) / v.sector_bytes;
    const uint64_t data_start = reserved + v.fats * fat_sectors + root_sectors;
    if (data_start >= total) throw FormatError("no room for data after the FATs");
    const uint64_t count = (total - data_start) / spc;
    // FAT32 is marked by a zero 16-bit FAT size, as Linux and mtools read
    // it (mkfs.vfat -F 32 makes such volumes with fewer than 65525
    // clusters); FAT12 and FAT16 differ by cluster count (spec section 3.5).
    v.bits = le16(b, 22) == 0 ? 32 : count < 4085 ? 12 : 16;
    v.clusters = static_cast<uint32_t>(count);
    v.fat_bytes = fat_sectors * v.sector_bytes;
    v.fat_offset = uint64_t(reserved) * v.sector_bytes;
    v.heap_offset = data_start * v.sector_bytes;
    if (v.bits == 32) {
        if (root_entries != 0) throw FormatError("FAT32 with a fixed root directory");
        const uint16_t ext_flags = le16(b, 40);
        if (ext_flags & 0x80) v.fat_offset += (ext_flags & 0x0F) * v.fat_bytes;  // mirroring off: one FAT active
        v.root_cluster = le32(b, 44);
        if (!v.valid_cluster(v.root_cluster)) throw FormatError("FAT32: bad root cluster");
    } else {
        v.root_offset = (reserved + v.fats * fat_sectors) * v.sector_bytes;
        v.root_bytes = uint64_t(root_entries) * 32;
    }
    const uint64_t fat_needed = (uint64_t(count) + 2) * v.bits / 8;
    if (fat_needed > v.fat_bytes) throw FormatError("the FAT is too small for the cluster count");
    if (v.volume_bytes > b.size()) throw FormatError("the volume is larger than the image");
    return v;
}

Geometry fat_geometry(const FatVolume& v) {
    Geometry g;
    g.fs = v.exfat ? FsKind::exfat : FsKind::vfat;
    g.size_bytes = v.volume_bytes;
    g.alloc_bytes = v.cluster_bytes;
    g.fat_bits = v.bits;
    g.fat_start_sector = v.fat_offset / kSectorBytes;
    g.fat_sectors = v.fat_bytes / kSectorBytes;
    g.fats = v.fats;
    g.root_dir_sector = (v.root_bytes != 0 ? v.root_offset : v.cluster_offset(v.root_cluster)) / kSectorBytes;
    g.data_start_sector = v.heap_offset / kSectorBytes;
    g.clusters = v.clusters;
    return g;
}

uint32_t fat_next(Bytes b, const FatVolume& v, uint32_t c) {
    switch (v.bits) {
    case 12: {
        const uint16_t pair = le16(b, v.fat_offset + c + c / 2);
        return (c & 1) ? pair >> 4 : pair & 0x0FFF;
    }
    case 16: return le16(b, v.fat_offset + uint64_t(c) * 2);
    default: {
        const uint32_t e = le32(b, v.fat_offset + uint64_t(c) * 4);
        return v.exfat ? e : e & 0x0FFFFFFF;
    }
    }
}

bool fat_is_end(const FatVolume& v, uint32_t value) {
    switch (v.bits) {
    case 12: return value >= 0xFF8;
    case 16: return value >= 0xFFF8;
    default: return v.exfat ? value >= 0xFFFFFFF8 : value >= 0x0FFFFFF8;
    }
}

namespace {

// A cluster chain from `first` to its end-of-chain mark.
std::vector<uint32_t> walk_chain(Bytes b, const FatVolume& v, uint32_t first, std::string_view name) {
    std::vector<uint32_t> out;
    uint32_t c = first;
    while (true) {
        out.push_back(c);
        if (out.size() > v.clusters) throw FormatError(fmt::format("'{}': cluster chain loops", name));
        const uint32_t next = fat_next(b, v, c);
        if (fat_is_end(v, next)) return out;
        if (!v.valid_cluster(next))
            throw FormatError(fmt::format("'{}': cluster {} links to invalid {:#x}", name, c, next));
        c = next;
    }
}

}  // namespace

std::vector<uint32_t> fat_clusters(Bytes b, const FatVolume& v, const FatEntry& e) {
    std::vector<uint32_t> out;
    const uint64_t needed = (e.size + v.cluster_bytes - 1) / v.cluster_bytes;
    if (e.first_cluster == 0) {
        if (needed != 0 || e.directory) throw FormatError(fmt::format("'{}' has data but no first cluster", e.name));
        return out;
    }
    if (!v.valid_cluster(e.first_cluster))
        throw FormatError(fmt::format("'{}' starts at invalid cluster {}", e.name, e.first_cluster));
    if (e.no_fat_chain) {
        if (needed == 0 || e.first_cluster - 2 + needed > v.clusters)
            throw FormatError(fmt::format("'{}': contiguous run past the cluster heap", e.name));
        for (uint64_t k = 0; k < needed; ++k) out.push_back(static_cast<uint32_t>(e.first_cluster + k));
        return out;
    }
    out = walk_chain(b, v, e.first_cluster, e.name);
    // A FAT folder records no size: its chain is its length.
    if (!(e.directory && !v.exfat) && out.size() != needed)
        throw FormatError(fmt::format("'{}': {} bytes need {} clusters, the chain has {}", e.name, e.size, needed,
                                      out.size()));
    return out;
}

namespace {

// Byte offsets of a folder's 32-byte entries, in order.
std::vector<uint64_t> dir_slots(Bytes b, const FatVolume& v, const std::optional<FatEntry>& dir) {
    std::vector<uint64_t> slots;
    auto add_range = [&](uint64_t off, uint64_t len) {
        if (off + len > b.size()) throw FormatError("a folder reaches past the image");
        for (uint64_t k = 0; k + 32 <= len; k += 32) slots.push_back(off + k);
    };
    if (!dir && v.root_bytes != 0) {
        add_range(v.root_offset, v.root_bytes);
        return slots;
    }
    // exFAT folders have a size (and may be NoFatChain); the roots and FAT
    // folders run to the end of their chain.
    const std::vector<uint32_t> clusters =
        dir ? fat_clusters(b, v, *dir) : walk_chain(b, v, v.root_cluster, "/");
    for (uint32_t c : clusters) add_range(v.cluster_offset(c), v.cluster_bytes);
    return slots;
}

uint8_t short_name_checksum(const uint8_t* name11) {
    uint8_t sum = 0;
    for (int k = 0; k < 11; ++k) sum = static_cast<uint8_t>(((sum & 1) << 7) + (sum >> 1) + name11[k]);
    return sum;
}

std::vector<FatEntry> list_fat(Bytes b, const FatVolume& v, const std::vector<uint64_t>& slots) {
    std::vector<FatEntry> out;
    std::u16string lfn;
    int lfn_next = 0;  // the ordinal expected next; 0: no long name pending
    uint8_t lfn_sum = 0;
    for (uint64_t off : slots) {
        const uint8_t* e = b.data() + off;
        if (e[0] == 0x00) break;
        if (e[0] == 0xE5) {
            lfn_next = 0;
            continue;
        }
        const uint8_t attr = e[11];
        if ((attr & 0x3F) == 0x0F) {
            const int ord = e[0] & 0x1F;
            if (e[0] & 0x40) {
                lfn.assign(size_t(ord) * 13, u'\0');
                lfn_next = ord;
                lfn_sum = e[13];
            }
            if (ord == 0 || ord != lfn_next || e[13] != lfn_sum) {
                lfn_next = 0;
                continue;
            }
            static constexpr int kCharOffsets[13] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
            for (int k = 0; k < 13; ++k)
                lfn[size_t(ord - 1) * 13 + k] = static_cast<char16_t>(e[kCharOffsets[k]] | (e[kCharOffsets[k] + 1] << 8));
            --lfn_next;
            continue;
        }
        if (attr & 0x08) {  // volume label
            lfn_next = 0;
            continue;
        }
        FatEntry fe;
        fe.entry_offset = off;
        const bool long_ok = !lfn.empty() && lfn_next == 0 && lfn_sum == short_name_checksum(e);
        if (long_ok) {
            for (char16_t c : lfn) {
                if (c == 0 || c == 0xFFFF) break;
                append_utf8(fe.name, c);
            }
        } else {
            // 8.3, with the NT lower-case flags mtools and Windows set.
            std::string base(reinterpret_cast<const char*>(e), 8), ext(reinterpret_cast<const char*>(e) + 8, 3);
            if (static_cast<uint8_t>(base[0]) == 0x05) base[0] = static_cast<char>(0xE5);
            while (!base.empty() && base.back() == ' ') base.pop_back();
            while (!ext.empty() && ext.back() == ' ') ext.pop_back();
            if (e[12] & 0x08) std::transform(base.begin(), base.end(), base.begin(), ascii_lower);
            if (e[12] & 0x10) std::transform(ext.begin(), ext.end(), ext.begin(), ascii_lower);
            fe.name = ext.empty() ? base : base + "." + ext;
        }
        lfn.clear();
        lfn_next = 0;
        if (fe.name == "." || fe.name == "..") continue;
        fe.directory = attr & 0x10;
        fe.first_cluster = le16(b, off + 26) | (v.bits == 32 ? uint32_t(le16(b, off + 20)) << 16 : 0u);
        fe.size = fe.directory ? 0 : le32(b, off + 28);
        fe.valid_size = fe.size;
        out.push_back(std::move(fe));
    }
    return out;
}

std::vector<FatEntry> list_exfat(Bytes b, const std::vector<uint64_t>& slots) {
    std::vector<FatEntry> out;
    for (size_t k = 0; k < slots.size(); ++k) {
        const uint8_t type = b[slots[k]];
        if (type == 0x00) break;
        if (type != 0x85) continue;
        const uint8_t* file = b.data() + slots[k];
        const unsigned secondary = file[1];
        if (secondary < 2 || k + secondary >= slots.size())
            throw FormatError("exFAT: file entry set cut short");
        std::vector<uint8_t> set;
        for (unsigned s = 0; s <= secondary; ++s) set.insert(set.end(), b.data() + slots[k + s], b.data() + slots[k + s] + 32);
        if (exfat_set_checksum(set) != le16(b, slots[k] + 2))
            throw FormatError(fmt::format("exFAT: entry set at byte {} has a bad checksum", slots[k]));
        const uint8_t* stream = set.data() + 32;
        if (stream[0] != 0xC0) throw FormatError("exFAT: file entry not followed by a stream extension");
        FatEntry fe;
        fe.entry_offset = slots[k];
        fe.directory = le16(b, slots[k] + 4) & 0x10;
        fe.no_fat_chain = stream[1] & 0x02;
        const unsigned name_len = stream[3];
        fe.valid_size = le(Bytes(set), 32 + 8, 8);
        fe.first_cluster = le32(Bytes(set), 32 + 20);
        fe.size = le(Bytes(set), 32 + 24, 8);
        std::u16string n;
        for (unsigned s = 2; s <= secondary && n.size() < name_len; ++s) {
            const uint8_t* ne = set.data() + 32 * s;
            if (ne[0] != 0xC1) break;
            for (int c = 0; c < 15 && n.size() < name_len; ++c)
                n.push_back(static_cast<char16_t>(ne[2 + 2 * c] | (ne[3 + 2 * c] << 8)));
        }
        if (n.size() != name_len) throw FormatError("exFAT: file name entries cut short");
        for (char16_t c : n) append_utf8(fe.name, c);
        out.push_back(std::move(fe));
        k += secondary;
    }
    return out;
}

}  // namespace

std::vector<FatEntry> fat_list(Bytes b, const FatVolume& v, const std::optional<FatEntry>& dir) {
    if (dir && !dir->directory) throw FormatError(fmt::format("'{}' is not a folder", dir->name));
    const auto slots = dir_slots(b, v, dir);
    return v.exfat ? list_exfat(b, slots) : list_fat(b, v, slots);
}

std::optional<FatEntry> fat_lookup(Bytes b, const FatVolume& v, std::string_view path) {
    std::optional<FatEntry> cur;  // the root
    size_t start = 0;
    while (start < path.size()) {
        if (path[start] == '/') {
            ++start;
            continue;
        }
        size_t end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        const std::string_view part = path.substr(start, end - start);
        if (cur && !cur->directory) return std::nullopt;
        std::optional<FatEntry> found;
        for (auto& e : fat_list(b, v, cur)) {
            if (same_name(e.name, part)) {
                found = std::move(e);
                break;
            }
        }
        if (!found) return std::nullopt;
        cur = std::move(found);
        start = end;
    }
    return cur;
}

FileExtents fat_file_extents(Bytes b, std::string_view path) {
    const FatVolume v = parse_fat_volume(b);
    const auto e = fat_lookup(b, v, path);
    if (!e || e->directory) throw FormatError(fmt::format("'{}' is not a file on the volume", path));
    FileExtents fx;
    fx.path = std::string(path);
    fx.size_bytes = e->size;
    const auto clusters = fat_clusters(b, v, *e);
    const uint64_t per_cluster = v.cluster_bytes / kSectorBytes;
    for (size_t k = 0; k < clusters.size(); ++k) {
        if (k > 0 && clusters[k] == clusters[k - 1] + 1) {
            fx.extents.back().sectors += per_cluster;
            continue;
        }
        fx.extents.push_back({uint64_t(k) * v.cluster_bytes, v.cluster_offset(clusters[k]) / kSectorBytes, per_cluster});
    }
    // The kernel maps FAT and exFAT files in logical sectors, so the file
    // ends at the sector holding its last byte, not at its cluster's end.
    if (!fx.extents.empty()) {
        const uint64_t end = (fx.size_bytes + v.sector_bytes - 1) / v.sector_bytes * v.sector_bytes;
        Extent& last = fx.extents.back();
        last.sectors = (end - last.file_offset) / kSectorBytes;
    }
    return fx;
}

std::vector<uint8_t> fat_read_file(Bytes b, std::string_view path) {
    const FileExtents fx = fat_file_extents(b, path);
    std::vector<uint8_t> out;
    out.reserve(fx.size_bytes);
    for (const auto& x : fx.extents) {
        const uint64_t want = std::min<uint64_t>(x.sectors * kSectorBytes, fx.size_bytes - out.size());
        const uint64_t off = x.sector * kSectorBytes;
        if (off + want > b.size()) throw FormatError("file data past the image end");
        out.insert(out.end(), b.data() + off, b.data() + off + want);
    }
    return out;
}

uint16_t exfat_set_checksum(std::span<const uint8_t> set) {
    uint16_t sum = 0;
    for (size_t k = 0; k < set.size(); ++k) {
        if (k == 2 || k == 3) continue;  // the checksum field itself
        sum = static_cast<uint16_t>(((sum & 1) ? 0x8000 : 0) + (sum >> 1) + set[k]);
    }
    return sum;
}

uint16_t exfat_name_hash(std::u16string_view upcased) {
    uint16_t hash = 0;
    for (char16_t c : upcased) {
        for (uint8_t byte : {static_cast<uint8_t>(c & 0xFF), static_cast<uint8_t>(c >> 8)})
            hash = static_cast<uint16_t>(((hash & 1) ? 0x8000 : 0) + (hash >> 1) + byte);
    }
    return hash;
}

}  // namespace blkrig::image
