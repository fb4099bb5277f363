#include "exfat_writer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace blkrig::image {

namespace {

// 2024-01-01 00:00:00 in exFAT's packed form, so images are reproducible.
constexpr uint32_t kTimestamp = (44u << 25) | (1u << 21) | (1u << 16);
constexpr uint8_t kUtc = 0x80;  // offset valid, +0

void put(uint8_t* p, uint64_t v, unsigned n) {
    for (unsigned k = 0; k < n; ++k) p[k] = static_cast<uint8_t>(v >> (8 * k));
}
uint64_t get(const uint8_t* p, unsigned n) {
    uint64_t v = 0;
    for (unsigned k = 0; k < n; ++k) v |= uint64_t(p[k]) << (8 * k);
    return v;
}

std::pair<std::string_view, std::string_view> split_parent(std::string_view path) {
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    const size_t slash = path.rfind('/');
    if (slash == std::string_view::npos) return {"", path};
    std::string_view parent = path.substr(0, slash);
    while (!parent.empty() && parent.front() == '/') parent.remove_prefix(1);
    return {parent, path.substr(slash + 1)};
}

}  // namespace

ExfatWriter::ExfatWriter(std::span<uint8_t> image) : img_(image), v_(parse_fat_volume(image)) {
    if (!v_.exfat) throw FormatError("not an exFAT volume");
    Dir root;
    (void)fat_list(img_, v_, std::nullopt);  // throws if the root's chain or entry sets are bad
    // The root's clusters, and the bitmap's place, from its entries.
    uint32_t c = v_.root_cluster;
    while (true) {
        root.clusters.push_back(c);
        const uint32_t n = fat_next(img_, v_, c);
        if (fat_is_end(v_, n)) break;
        c = n;
    }
    for (uint32_t rc : root.clusters) {
        const uint64_t base = v_.cluster_offset(rc);
        for (uint64_t off = base; off < base + v_.cluster_bytes; off += 32) {
            if (img_[off] == 0x81 && (img_[off + 1] & 1) == 0) {
                const uint32_t first = static_cast<uint32_t>(get(&img_[off + 20], 4));
                bitmap_bytes_ = get(&img_[off + 24], 8);
                if (!v_.valid_cluster(first) || bitmap_bytes_ * 8 < v_.clusters)
                    throw FormatError("exFAT: bad allocation bitmap entry");
                bitmap_offset_ = v_.cluster_offset(first);
            }
        }
    }
    if (bitmap_bytes_ == 0) throw FormatError("exFAT: no allocation bitmap in the root folder");
    // Start after everything mkfs allocated.
    for (uint32_t k = 0; k < v_.clusters; ++k) {
        if (img_[bitmap_offset_ + k / 8] & (1u << (k % 8))) cursor_ = k + 3;
    }
    dirs_.emplace("", std::move(root));
}

uint32_t ExfatWriter::alloc(uint64_t count) {
    if (count == 0) return 0;
    if (cursor_ - 2 + count > v_.clusters)
        throw SpecError("files", fmt::format("the exFAT volume ran out of clusters ({} of {} in use)", cursor_ - 2,
                                             v_.clusters));
    const uint32_t first = cursor_;
    for (uint64_t k = 0; k < count; ++k) {
        const uint32_t bit = static_cast<uint32_t>(first - 2 + k);
        uint8_t& byte = img_[bitmap_offset_ + bit / 8];
        if (byte & (1u << (bit % 8))) throw FormatError("exFAT: cluster beyond the cursor already in use");
        byte |= static_cast<uint8_t>(1u << (bit % 8));
    }
    cursor_ = static_cast<uint32_t>(first + count);
    return first;
}

void ExfatWriter::set_fat(uint32_t cluster, uint32_t value) {
    put(&img_[v_.fat_offset + uint64_t(cluster) * 4], value, 4);
}

void ExfatWriter::zero_cluster(uint32_t c) {
    std::memset(&img_[v_.cluster_offset(c)], 0, v_.cluster_bytes);
}

void ExfatWriter::grow(Dir& d) {
    const uint32_t c = alloc(1);
    zero_cluster(c);
    set_fat(d.clusters.back(), c);
    set_fat(c, 0xFFFFFFFF);
    d.clusters.push_back(c);
    if (d.stream_offset != 0) {
        // A folder's size is in its stream extension, under its set checksum.
        const uint64_t size = uint64_t(d.clusters.size()) * v_.cluster_bytes;
        put(&img_[d.stream_offset + 8], size, 8);
        put(&img_[d.stream_offset + 24], size, 8);
        std::vector<uint8_t> set(&img_[d.set_offset], &img_[d.set_offset] + 32 * d.set_entries);
        put(&img_[d.set_offset + 2], exfat_set_checksum(set), 2);
    }
}

std::vector<uint64_t> ExfatWriter::insert(Dir& d, const std::vector<std::array<uint8_t, 32>>& set) {
    while (true) {
        std::vector<uint64_t> slots;
        for (uint32_t c : d.clusters) {
            const uint64_t base = v_.cluster_offset(c);
            for (uint64_t off = base; off < base + v_.cluster_bytes; off += 32) slots.push_back(off);
        }
        size_t run = 0;
        for (size_t k = 0; k < slots.size(); ++k) {
            run = img_[slots[k]] < 0x80 ? run + 1 : 0;  // unused or deleted
            if (run == set.size()) {
                std::vector<uint64_t> at(slots.begin() + static_cast<ptrdiff_t>(k + 1 - run),
                                         slots.begin() + static_cast<ptrdiff_t>(k + 1));
                for (size_t s = 0; s < set.size(); ++s) std::memcpy(&img_[at[s]], set[s].data(), 32);
                return at;
            }
        }
        grow(d);
    }
}

void ExfatWriter::add_entry(std::string_view path, bool directory, uint64_t size, uint32_t first, bool no_fat_chain) {
    const auto [parent, leaf] = split_parent(path);
    Dir& d = dir(parent);
    std::u16string up;
    for (char ch : leaf) up.push_back(static_cast<char16_t>((ch >= 'a' && ch <= 'z') ? ch - 'a' + 'A' : ch));
    if (leaf.empty() || leaf.size() > 255) throw SpecError("files", fmt::format("bad exFAT name in '{}'", path));
    const size_t name_entries = (leaf.size() + 14) / 15;
    std::vector<std::array<uint8_t, 32>> set(2 + name_entries);
    for (auto& e : set) e.fill(0);
    uint8_t* f = set[0].data();
    f[0] = 0x85;
    f[1] = static_cast<uint8_t>(1 + name_entries);
    put(f + 4, directory ? 0x10 : 0x20, 2);
    put(f + 8, kTimestamp, 4);
    put(f + 12, kTimestamp, 4);
    put(f + 16, kTimestamp, 4);
    f[22] = f[23] = f[24] = kUtc;
    uint8_t* s = set[1].data();
    s[0] = 0xC0;
    s[1] = static_cast<uint8_t>(0x01 | (no_fat_chain ? 0x02 : 0x00));  // AllocationPossible, NoFatChain
    s[3] = static_cast<uint8_t>(leaf.size());
    put(s + 4, exfat_name_hash(up), 2);
    put(s + 8, size, 8);  // ValidDataLength: all of it was written
    put(s + 20, first, 4);
    put(s + 24, size, 8);
    for (size_t k = 0; k < leaf.size(); ++k) {
        uint8_t* n = set[2 + k / 15].data();
        n[0] = 0xC1;
        put(n + 2 + 2 * (k % 15), static_cast<unsigned char>(leaf[k]), 2);
    }
    std::vector<uint8_t> flat;
    for (const auto& e : set) flat.insert(flat.end(), e.begin(), e.end());
    put(f + 2, exfat_set_checksum(flat), 2);
    const auto at = insert(d, set);
    if (directory) {
        Dir nd;
        nd.path = std::string(parent.empty() ? leaf : std::string(parent) + "/" + std::string(leaf));
        nd.clusters.push_back(first);
        nd.set_offset = at[0];
        nd.stream_offset = at[1];
        nd.set_entries = static_cast<unsigned>(set.size());
        dirs_.emplace(nd.path, std::move(nd));
    }
}

ExfatWriter::Dir& ExfatWriter::dir(std::string_view path) {
    while (!path.empty() && path.front() == '/') path.remove_prefix(1);
    auto it = dirs_.find(path);
    if (it == dirs_.end()) throw FormatError(fmt::format("exFAT: folder '/{}' was not made", path));
    return it->second;
}

void ExfatWriter::mkdirs(std::string_view path) {
    while (!path.empty() && path.front() == '/') path.remove_prefix(1);
    size_t pos = 0;
    while (pos <= path.size() && !path.empty()) {
        size_t end = path.find('/', pos);
        if (end == std::string_view::npos) end = path.size();
        const std::string_view prefix = path.substr(0, end);
        if (dirs_.find(prefix) == dirs_.end()) {
            // Folders get a FAT chain so they can grow a cluster at a time.
            const uint32_t c = alloc(1);
            zero_cluster(c);
            set_fat(c, 0xFFFFFFFF);
            add_entry(prefix, true, v_.cluster_bytes, c, false);
        }
        pos = end + 1;
        if (end == path.size()) break;
    }
}

void ExfatWriter::add_file(std::string_view path, uint64_t size, const std::vector<uint64_t>& runs,
                           ContentReader& content) {
    std::vector<uint32_t> clusters;
    uint64_t total = 0;
    for (size_t r = 0; r < runs.size(); ++r) {
        if (r > 0) ++cursor_;  // the free cluster that separates runs
        const uint32_t first = alloc(runs[r]);
        for (uint64_t k = 0; k < runs[r]; ++k) clusters.push_back(static_cast<uint32_t>(first + k));
        total += runs[r];
    }
    if (total * v_.cluster_bytes < size || (size > 0 && (total - 1) * v_.cluster_bytes >= size))
        throw FormatError(fmt::format("exFAT: {} clusters do not fit {} bytes", total, size));
    const bool chain = runs.size() > 1;
    if (chain) {
        for (size_t k = 0; k < clusters.size(); ++k)
            set_fat(clusters[k], k + 1 < clusters.size() ? clusters[k + 1] : 0xFFFFFFFF);
    }
    std::vector<uint8_t> buf(v_.cluster_bytes);
    for (size_t k = 0; k < clusters.size(); ++k) {
        const uint64_t off = uint64_t(k) * v_.cluster_bytes;
        const uint64_t n = std::min<uint64_t>(v_.cluster_bytes, size - off);
        std::fill(buf.begin(), buf.end(), 0);
        content.read(off, std::span<uint8_t>(buf.data(), static_cast<size_t>(n)));
        std::memcpy(&img_[v_.cluster_offset(clusters[k])], buf.data(), buf.size());
    }
    // fsck.exfat wants empty files without NoFatChain.
    add_entry(path, false, size, clusters.empty() ? 0 : clusters.front(), !chain && !clusters.empty());
}

void ExfatWriter::finish() {
    uint64_t used = 0;
    for (uint32_t k = 0; k < v_.clusters; ++k) used += (img_[bitmap_offset_ + k / 8] >> (k % 8)) & 1;
    img_[112] = static_cast<uint8_t>(used * 100 / v_.clusters);
}

}  // namespace blkrig::image
