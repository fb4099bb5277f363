// The crash model: a device with a volatile write cache may lose any write
// not yet covered by a completed FLUSH. Writes reach the store at once (the
// guest reads its own writes); the log keeps, for each write since the last
// flush, what the sectors held before and after, so a power cut can put
// back the state a real disk could be left in: all unflushed writes lost,
// a seeded subset lost, or none.
//
// Every logged operation can also be appended to a file in the
// dm-log-writes format (drivers/md/dm-log-writes.c; sector size 512), which
// replay tools read to rebuild the disk at any entry or mark.
#pragma once

#include "store/store.hpp"

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace blkrig::store {

enum class CutMode { drop_all, drop_random, keep_all };
const char* to_string(CutMode m);

struct LoggedWrite {
    uint64_t seq;     // the device request
    uint32_t type;    // virtio request type (write, discard, write_zeroes)
    uint64_t offset;  // bytes
    uint64_t bytes;
};

struct CutReport {
    CutMode mode;
    uint64_t seed = 0;
    std::vector<LoggedWrite> dropped;  // in arrival order
    std::vector<LoggedWrite> kept;
    int error = 0;  // -errno from the store while putting data back, 0 if fine
};

struct WriteLogError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class WriteLog {
public:
    // export_path empty: no file. Throws WriteLogError naming the path.
    WriteLog(Store& store, const std::string& export_path);
    ~WriteLog();  // writes the file's final superblock
    WriteLog(const WriteLog&) = delete;
    WriteLog& operator=(const WriteLog&) = delete;

    // Runs op (which changes [offset, offset+bytes) of the store) with the
    // contents before and after captured. Returns op's result. written: the
    // data op writes, when it is a plain write; the contents after are then
    // copied from it instead of read back from the store.
    int change(uint64_t seq, uint32_t type, uint64_t offset, uint64_t bytes, const std::function<int()>& op,
               std::span<const iovec> written = {});
    // Runs op (the store flush); when it succeeds everything logged so far
    // is durable.
    int flush(uint64_t seq, const std::function<int()>& op);
    // A named point in the exported log (a step marker).
    void mark(const std::string& text);

    // Puts the store in a state a power cut could leave: drops unflushed
    // writes per mode (drop_random: each with probability share, from seed).
    CutReport power_cut(CutMode mode, uint64_t seed, double share);
    size_t unflushed() const;
    uint64_t unflushed_bytes() const;

private:
    struct Entry {
        LoggedWrite w;
        std::vector<uint8_t> before, after;
    };
    int read_range(uint64_t offset, uint64_t bytes, std::vector<uint8_t>& out);
    int write_range(uint64_t offset, const std::vector<uint8_t>& data);
    void append(uint64_t sector, uint64_t nr_sectors, uint64_t flags, const void* data, uint64_t data_bytes, bool inline_data);
    void write_super();

    Store& store_;
    mutable std::mutex mu_;
    std::vector<Entry> pending_;  // since the last completed flush
    uint64_t pending_bytes_ = 0;
    int fd_ = -1;
    std::string path_;
    uint64_t entries_ = 0;
    uint64_t file_end_ = 512;  // the superblock takes sector 0
    std::string export_error_;  // the first failed write to the file, empty if none
    void export_failed(const char* what);  // under mu_

public:
    // Why the exported file is incomplete (logged once when it happened), empty if it is not.
    std::string export_error() const {
        std::lock_guard lock(mu_);
        return export_error_;
    }
};

}  // namespace blkrig::store
