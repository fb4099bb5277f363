#include "trace/writer.hpp"

#include "common/log.hpp"

#include "trace/reader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include <cerrno>
#include <cstring>

namespace blkrig::trace {

Writer::Writer(const std::string& path, const FileHeader& header, const std::string& config_json, size_t max_pending_bytes)
    : path_(path), max_pending_(max_pending_bytes) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw TraceError(fmt::format("cannot create trace file {}: {}", path, std::strerror(errno)));
    start_fresh(header, config_json);
}

void Writer::start_fresh(const FileHeader& header, const std::string& config_json) {
    FileHeader h = header;
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = kVersion;
    h.config_json_len = static_cast<uint32_t>(config_json.size());
    // Records start 8-aligned after the header and its JSON.
    std::vector<uint8_t> head((sizeof h + config_json.size() + 7) / 8 * 8, 0);
    std::memcpy(head.data(), &h, sizeof h);
    std::memcpy(head.data() + sizeof h, config_json.data(), config_json.size());
    write_all(head);
    if (!write_error_.empty()) {
        ::close(fd_);
        throw TraceError(write_error_);
    }
    thread_ = std::thread([this] { run(); });
}

std::unique_ptr<Writer> Writer::open_continued(const std::string& path, const FileHeader& header, const std::string& config_json) {
    std::unique_ptr<Writer> w(new Writer());
    w->path_ = path;
    w->write_through_ = true;
    w->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (w->fd_ < 0) throw TraceError(fmt::format("cannot open trace file {}: {}", path, std::strerror(errno)));
    struct stat st {};
    ::fstat(w->fd_, &st);
    if (st.st_size == 0) {
        w->start_fresh(header, config_json);
        return w;
    }
    std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
    if (::pread(w->fd_, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()))
        throw TraceError(fmt::format("cannot read trace file {} to continue it: {}", path, std::strerror(errno)));
    Trace t;
    try {
        t = parse_trace(bytes);
    } catch (const ReadError& e) {
        throw TraceError(fmt::format("cannot continue trace file {}: {}", path, e.what()));
    }
    // Keep every whole record but an end record: the trace goes on.
    size_t off = (sizeof(FileHeader) + t.header.config_json_len + 7) / 8 * 8, keep = off;
    while (bytes.size() - off >= sizeof(RecordPrefix)) {
        RecordPrefix p;
        std::memcpy(&p, bytes.data() + off, sizeof p);
        if (p.length < sizeof p || p.length % 8 || p.length > bytes.size() - off) break;
        if (p.kind != static_cast<uint16_t>(RecordKind::end)) keep = off + p.length;
        off += p.length;
    }
    if (::ftruncate(w->fd_, static_cast<off_t>(keep)) != 0 || ::lseek(w->fd_, static_cast<off_t>(keep), SEEK_SET) < 0)
        throw TraceError(fmt::format("cannot continue trace file {}: {}", path, std::strerror(errno)));
    uint64_t next = 0;
    for (const auto& r : t.requests) next = std::max(next, r.seq + 1);
    for (const auto& m : t.markers) next = std::max(next, m.seq + 1);
    // What a cut-off record may have held is not counted.
    w->requests_ = std::count_if(t.order.begin(), t.order.end(), [&](const Entry& e) { return e.kind == RecordKind::request; });
    w->dropped_total_ = t.dropped_total();
    w->next_seq_ = next;
    w->continued_ = true;
    w->thread_ = std::thread([p = w.get()] { p->run(); });
    return w;
}

Writer::~Writer() { close(); }

namespace {

// Counters only ever written under mu_: a plain store, not a locked
// read-modify-write on every request; readers elsewhere only load.
void bump(std::atomic<uint64_t>& n) { n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }

}  // namespace

template <typename F>
void Writer::append(F&& encode_fn, bool is_request) {
    std::lock_guard lock(mu_);
    if (closed_ || pending_.size() >= max_pending_) {
        ++dropped_since_;
        bump(dropped_total_);
        return;
    }
    encode_fn(pending_);
    if (is_request) bump(requests_);
    if (write_through_) {
        // In the file before the request path goes on: a killed process loses nothing.
        write_all(pending_);
        pending_.clear();
        return;
    }
    if (!wake_ && (!is_request || pending_.size() >= kWakeBytes)) {
        wake_ = true;
        cv_.notify_one();
    }
}

void Writer::record(const RequestRecord& r) {
    append(
        [&](std::vector<uint8_t>& out) {
            encode(r, out);
            if (r.fault_rule || r.fault_action) encode(FaultRecord{r.seq, r.fault_rule, r.fault_action, r.fault_delay_ns}, out);
        },
        true);
}

void Writer::event(const EventRecord& e) {
    append([&](std::vector<uint8_t>& out) { encode(e, out); }, false);
}

void Writer::marker(const MarkerRecord& m) {
    append([&](std::vector<uint8_t>& out) { encode(m, out); }, false);
}

void Writer::fault(const FaultRecord& f) {
    append([&](std::vector<uint8_t>& out) { encode(f, out); }, false);
}

void Writer::write_all(const std::vector<uint8_t>& buf) {
    size_t off = 0;
    while (off < buf.size()) {
        const ssize_t n = ::write(fd_, buf.data() + off, buf.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (write_error_.empty()) {
                write_error_ = fmt::format("writing trace file {}: {}", path_, std::strerror(errno));
                log(LogLevel::error, "{}", write_error_);
            }
            return;
        }
        off += static_cast<size_t>(n);
    }
}

void Writer::run() {
    std::vector<uint8_t> batch;
    std::unique_lock lock(mu_);
    for (;;) {
        cv_.wait_for(lock, std::chrono::milliseconds(kFlushEveryMs), [&] { return stop_ || wake_; });
        wake_ = false;
        if (pending_.capacity() < kWakeBytes * 2) pending_.reserve(kWakeBytes * 2);  // no growth on the request path
        batch.swap(pending_);
        if (dropped_since_ > 0) {
            encode_dropped(dropped_since_, monotonic_ns(), batch);
            dropped_since_ = 0;
        }
        const bool stopping = stop_;
        lock.unlock();
        if (!batch.empty()) write_all(batch);
        batch.clear();  // keeps its capacity: swapped back in as pending_
        if (stopping) return;
        lock.lock();
    }
}

void Writer::close() {
    {
        std::lock_guard lock(mu_);
        if (closed_) return;
        closed_ = true;
        stop_ = true;
        cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
    std::vector<uint8_t> tail;
    {
        std::lock_guard lock(mu_);
        if (dropped_since_ > 0) encode_dropped(dropped_since_, monotonic_ns(), tail);
        dropped_since_ = 0;
    }
    encode_end(monotonic_ns(), requests_.load(), dropped_total_.load(), tail);
    write_all(tail);
    ::fsync(fd_);
    ::close(fd_);
    fd_ = -1;
}

}  // namespace blkrig::trace
