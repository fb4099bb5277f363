#include "crash/log_writes.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cstring>

namespace blkrig::crash {

namespace {
constexpr uint64_t kMagic = 0x6a736677736872ull;
constexpr uint64_t kSector = 512;
constexpr uint64_t kFlagFlush = 1 << 0, kFlagFua = 1 << 1, kFlagDiscard = 1 << 2, kFlagMark = 1 << 3;
constexpr uint64_t kKnownFlags = kFlagFlush | kFlagFua | kFlagDiscard | kFlagMark;

uint64_t u64(std::span<const uint8_t> b, uint64_t off) {
    uint64_t v;
    std::memcpy(&v, b.data() + off, sizeof v);
    return v;
}
}  // namespace

WriteLogFile parse_log_writes(std::span<const uint8_t> b) {
    if (b.size() < kSector) throw LogError(fmt::format("write log: {} bytes, shorter than its superblock ({})", b.size(), kSector));
    if (u64(b, 0) != kMagic) throw LogError("write log: offset 0: not a dm-log-writes file (bad magic)");
    if (u64(b, 8) != 1) throw LogError(fmt::format("write log: offset 8: version {}, only 1 is known", u64(b, 8)));
    uint32_t ss;
    std::memcpy(&ss, b.data() + 24, sizeof ss);
    if (ss != kSector) throw LogError(fmt::format("write log: offset 24: sector size {}, only 512 is known", ss));
    WriteLogFile f;
    f.entries_claimed = u64(b, 16);
    uint64_t off = kSector;
    // The superblock's count ends the log: a log device holds stale bytes past it.
    while (off < b.size() && f.entries_read < f.entries_claimed) {
        if (b.size() - off < kSector) {
            f.cut_short = fmt::format("offset {}: {} bytes, less than an entry header", off, b.size() - off);
            break;
        }
        const uint64_t sector = u64(b, off), nr = u64(b, off + 8), flags = u64(b, off + 16), data_len = u64(b, off + 24);
        if (flags & ~kKnownFlags) throw LogError(fmt::format("write log: entry {} at offset {}: unknown flags {:#x}", f.entries.size(), off, flags));
        LogEntry e;
        uint64_t next = off + kSector;
        if (flags & kFlagMark) {
            if (data_len > kSector - 32) throw LogError(fmt::format("write log: entry {} at offset {}: mark of {} bytes", f.entries.size(), off, data_len));
            e.kind = LogEntry::Kind::mark;
            e.mark.assign(reinterpret_cast<const char*>(b.data() + off + 32), data_len);
        } else if (flags & kFlagDiscard) {
            e.kind = LogEntry::Kind::discard;
            e.sector = sector;
            e.nr_sectors = nr;
        } else if (nr == 0 && (flags & kFlagFlush)) {
            e.kind = LogEntry::Kind::flush;
        } else {
            // A write; a FUA write is durable once it is done: a flush of its own right after it.
            if (nr > (UINT64_MAX - next) / kSector || sector > UINT64_MAX - nr)
                throw LogError(fmt::format("write log: entry {} at offset {}: {} sectors at {} do not fit", f.entries.size(), off, nr, sector));
            e.sector = sector;
            e.nr_sectors = nr;
            e.data_offset = next;
            next += nr * kSector;
            if (next > b.size()) {
                f.cut_short = fmt::format("entry {} at offset {}: its {} sectors of data run past the end of the file", f.entries.size(), off, nr);
                break;
            }
        }
        f.entries.push_back(std::move(e));
        ++f.entries_read;
        if (f.entries.back().kind == LogEntry::Kind::write && (flags & (kFlagFua | kFlagFlush))) {
            LogEntry fl;
            fl.kind = LogEntry::Kind::flush;
            f.entries.push_back(fl);
        }
        off = next;
    }
    if (f.cut_short.empty() && f.entries_read < f.entries_claimed)
        f.cut_short = fmt::format("the superblock counts {} entries, the file holds {}", f.entries_claimed, f.entries_read);
    return f;
}

int64_t marker_of(const LogEntry& e) {
    constexpr std::string_view prefix = "blkrig marker ";
    if (e.kind != LogEntry::Kind::mark || !e.mark.starts_with(prefix)) return -1;
    int64_t n = -1;
    const char* p = e.mark.data() + prefix.size();
    const auto r = std::from_chars(p, e.mark.data() + e.mark.size(), n);
    return r.ec == std::errc{} && r.ptr == e.mark.data() + e.mark.size() && n >= 0 ? n : -1;
}

}  // namespace blkrig::crash
