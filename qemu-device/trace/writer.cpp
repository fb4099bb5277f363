#include "trace/writer.hpp"

#include "common/log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace blkrig::trace {

Writer::Writer(const std::string& path, const FileHeader& header, const std::string& config_json, size_t max_pending_bytes)
    : path_(path), max_pending_(max_pending_bytes) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw TraceError(fmt::format("cannot create trace file {}: {}", path, std::strerror(errno)));
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

Writer::~Writer() { close(); }

template <typename F>
void Writer::append(F&& encode_fn, bool is_request) {
    std::lock_guard lock(mu_);
    if (closed_ || pending_.size() >= max_pending_) {
        ++dropped_since_;
        dropped_total_.fetch_add(1);
        return;
    }
    encode_fn(pending_);
    if (is_request) requests_.fetch_add(1);
    cv_.notify_one();
}

void Writer::record(const RequestRecord& r) {
    append([&](std::vector<uint8_t>& out) { encode(r, out); }, true);
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
        cv_.wait(lock, [&] { return stop_ || !pending_.empty() || dropped_since_ > 0; });
        batch.swap(pending_);
        if (dropped_since_ > 0) {
            encode_dropped(dropped_since_, monotonic_ns(), batch);
            dropped_since_ = 0;
        }
        const bool stopping = stop_;
        lock.unlock();
        if (!batch.empty()) write_all(batch);
        batch.clear();
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
