#include "store/write_log.hpp"
#include "common/sectors.hpp"

#include "common/log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

namespace blkrig::store {

namespace {
// dm-log-writes on-disk format, little endian (x86 here).
constexpr uint64_t kMagic = 0x6a736677736872ull;
constexpr uint64_t kVersion = 1;
constexpr uint32_t kSector = sectors::kSize;  // the log's own unit is the sector too
constexpr uint64_t kFlagFlush = 1 << 0;
constexpr uint64_t kFlagDiscard = 1 << 2;
constexpr uint64_t kFlagMark = 1 << 3;
constexpr uint32_t kTypeDiscard = 11;  // VIRTIO_BLK_T_DISCARD

struct Super {
    uint64_t magic, version, nr_entries;
    uint32_t sectorsize;
};
struct EntryHeader {
    uint64_t sector, nr_sectors, flags, data_len;
};
}  // namespace

const char* to_string(CutMode m) {
    switch (m) {
    case CutMode::drop_all: return "drop_all";
    case CutMode::drop_random: return "drop_random";
    case CutMode::keep_all: return "keep_all";
    }
    return "?";
}

WriteLog::WriteLog(Store& store, const std::string& export_path) : store_(store), path_(export_path) {
    if (path_.empty()) return;
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw WriteLogError(fmt::format("write log {}: {}", path_, std::strerror(errno)));
    write_super();
}

WriteLog::~WriteLog() {
    if (fd_ < 0) return;
    std::lock_guard lock(mu_);
    write_super();
    ::close(fd_);
}

void WriteLog::export_failed(const char* what) {
    if (!export_error_.empty()) return;
    export_error_ = fmt::format("write log {}: writing the {} failed: {}", path_, what, std::strerror(errno));
    log(LogLevel::error, "{}; later entries are not in the file", export_error_);
}

void WriteLog::write_super() {
    uint8_t sector[kSector] = {};
    const Super s{kMagic, kVersion, entries_, kSector};
    std::memcpy(sector, &s, sizeof s);
    if (::pwrite(fd_, sector, sizeof sector, 0) != static_cast<ssize_t>(sizeof sector)) export_failed("superblock");
}

void WriteLog::append(uint64_t sector, uint64_t nr_sectors, uint64_t flags, const void* data, uint64_t data_bytes, bool inline_data) {
    if (fd_ < 0) return;
    std::vector<uint8_t> buf(kSector, 0);
    const EntryHeader h{sector, nr_sectors, flags, inline_data ? data_bytes : 0};
    std::memcpy(buf.data(), &h, sizeof h);
    if (inline_data) std::memcpy(buf.data() + sizeof h, data, std::min<uint64_t>(data_bytes, kSector - sizeof h));
    else if (data_bytes) buf.insert(buf.end(), static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + data_bytes);
    buf.resize((buf.size() + kSector - 1) / kSector * kSector, 0);
    if (::pwrite(fd_, buf.data(), buf.size(), static_cast<off_t>(file_end_)) != static_cast<ssize_t>(buf.size())) {
        export_failed("entry");
        return;
    }
    file_end_ += buf.size();
    ++entries_;
    // dm-log-writes rewrites the superblock at every flush; so do we, so a
    // log cut short still says how many entries it holds.
    if (flags & (kFlagFlush | kFlagMark)) write_super();
}

int WriteLog::read_range(uint64_t offset, uint64_t bytes, std::vector<uint8_t>& out) {
    out.resize(bytes);
    const iovec v{out.data(), out.size()};
    return store_.read(offset, std::span<const iovec>(&v, 1));
}

int WriteLog::write_range(uint64_t offset, const std::vector<uint8_t>& data) {
    const iovec v{const_cast<uint8_t*>(data.data()), data.size()};
    return store_.write(offset, std::span<const iovec>(&v, 1));
}

int WriteLog::change(uint64_t seq, uint32_t type, uint64_t offset, uint64_t bytes, const std::function<int()>& op,
                     std::span<const iovec> written) {
    std::lock_guard lock(mu_);
    Entry e{{seq, type, offset, bytes}, {}, {}};
    if (int r = read_range(offset, bytes, e.before); r != 0) return r;
    const int r = op();
    if (r == 0 && !written.empty()) {
        e.after.reserve(bytes);
        for (const auto& v : written) {
            const auto* p = static_cast<const uint8_t*>(v.iov_base);
            e.after.insert(e.after.end(), p, p + v.iov_len);
        }
        e.after.resize(bytes);
    } else if (int rr = read_range(offset, bytes, e.after); rr != 0) {
        // A failed op may still have changed part of the range: log what is there.
        return r != 0 ? r : rr;
    }
    append(offset / kSector, bytes / kSector, type == kTypeDiscard ? kFlagDiscard : 0, e.after.data(),
           type == kTypeDiscard ? 0 : bytes, false);
    pending_bytes_ += bytes;
    pending_.push_back(std::move(e));
    return r;
}

int WriteLog::flush(uint64_t, const std::function<int()>& op) {
    std::lock_guard lock(mu_);
    const int r = op();
    if (r == 0) {
        pending_.clear();
        pending_bytes_ = 0;
        append(0, 0, kFlagFlush, nullptr, 0, false);
    }
    return r;
}

void WriteLog::mark(const std::string& text) {
    std::lock_guard lock(mu_);
    append(0, 0, kFlagMark, text.data(), text.size(), true);
}

CutReport WriteLog::power_cut(CutMode mode, uint64_t seed, double share) {
    std::lock_guard lock(mu_);
    CutReport rep{mode, seed, {}, {}, 0};
    std::vector<bool> drop(pending_.size(), mode == CutMode::drop_all);
    if (mode == CutMode::drop_random) {
        std::mt19937_64 rng(seed);
        std::uniform_real_distribution<double> u(0.0, 1.0);
        for (size_t i = 0; i < drop.size(); ++i) drop[i] = u(rng) < share;
    }
    for (size_t i = 0; i < pending_.size(); ++i) (drop[i] ? rep.dropped : rep.kept).push_back(pending_[i].w);
    if (!rep.dropped.empty()) {
        // Back to the last flushed state (undo newest first), then forward
        // through the writes that survive, in the order they arrived.
        for (size_t i = pending_.size(); i-- > 0;)
            if (int r = write_range(pending_[i].w.offset, pending_[i].before); r != 0 && rep.error == 0) rep.error = r;
        for (size_t i = 0; i < pending_.size(); ++i)
            if (!drop[i])
                if (int r = write_range(pending_[i].w.offset, pending_[i].after); r != 0 && rep.error == 0) rep.error = r;
    }
    if (int r = store_.flush(); r != 0 && rep.error == 0) rep.error = r;
    pending_.clear();
    pending_bytes_ = 0;
    const std::string text = fmt::format("power_cut {} dropped={} kept={}", to_string(mode), rep.dropped.size(), rep.kept.size());
    append(0, 0, kFlagMark, text.data(), text.size(), true);
    return rep;
}

size_t WriteLog::unflushed() const {
    std::lock_guard lock(mu_);
    return pending_.size();
}

uint64_t WriteLog::unflushed_bytes() const {
    std::lock_guard lock(mu_);
    return pending_bytes_;
}

}  // namespace blkrig::store
