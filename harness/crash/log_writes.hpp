// The write log a crash run records (blkrig-device --write-log), read back:
// the dm-log-writes format of drivers/md/dm-log-writes.c (a superblock in
// sector 0, then per entry a header sector and, for a write, its data).
// Pure: bytes in, entries out; a bad superblock or entry is a LogError
// naming the byte offset, a file cut inside an entry keeps what came before.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace blkrig::crash {

struct LogError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct LogEntry {
    enum class Kind { write, discard, flush, mark };
    Kind kind = Kind::write;
    uint64_t sector = 0;      // write, discard
    uint64_t nr_sectors = 0;  // write, discard
    uint64_t data_offset = 0; // write: where its nr_sectors × 512 bytes start in the file
    std::string mark;         // mark: its text ("blkrig marker N" for a step boundary)
};

struct WriteLogFile {
    uint64_t entries_claimed = 0;  // the superblock's count; the file past it is not read
    uint64_t entries_read = 0;     // of those, the ones the file holds whole
    std::vector<LogEntry> entries; // with a flush entry added after each FUA write
    std::string cut_short;  // why the entries stop before the count, empty if they do not
};

WriteLogFile parse_log_writes(std::span<const uint8_t> bytes);

// The step-boundary marker a mark names ("blkrig marker N"), or -1.
int64_t marker_of(const LogEntry& e);

}  // namespace blkrig::crash
