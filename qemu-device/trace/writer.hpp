// Trace writer: request threads encode a record into a memory buffer under a
// short lock; one background thread writes the buffers to disk. The request
// path never waits for the disk, and does not wake the writer for each
// record either: a wake-up per request was most of the trace's cost (on 2
// cores the writer took the CPU from the queue thread for every request).
// The writer wakes for a full batch (kWakeBytes), for any record that is
// not a request, and on its own every kFlushEvery. When the pending buffer is full, records are
// counted as dropped and the count is written as its own record, so the trace
// says it is incomplete. A continued trace (a device process that follows
// one that died) writes each record through at once instead, so a process
// killed outright loses none, and appends to the file the previous process
// left, in the same seq space.
#pragma once

#include "trace/format.hpp"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace blkrig::trace {

struct TraceError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Writer {
public:
    // Throws TraceError if the file cannot be created.
    Writer(const std::string& path, const FileHeader& header, const std::string& config_json,
           size_t max_pending_bytes = 64u << 20);
    // Continues the trace at path if it holds one (a partial last record and
    // an end record are cut off; continued() is then true), else starts it.
    // Either way every record is written through at once.
    static std::unique_ptr<Writer> open_continued(const std::string& path, const FileHeader& header, const std::string& config_json);
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    void record(const RequestRecord& r);
    void event(const EventRecord& e);
    void marker(const MarkerRecord& m);
    void fault(const FaultRecord& f);

    // Writes everything pending and the end record, then closes. Idempotent.
    void close();

    uint64_t requests() const { return requests_.load(); }
    uint64_t dropped() const { return dropped_total_.load(); }
    bool continued() const { return continued_; }
    // The seq after the highest one the file held when it was continued.
    uint64_t next_seq() const { return next_seq_; }
    // The first failed write, empty if none; read it after close().
    const std::string& write_error() const { return write_error_; }

private:
    static constexpr size_t kWakeBytes = 256u << 10;
    static constexpr int kFlushEveryMs = 20;

    Writer() = default;
    void start_fresh(const FileHeader& header, const std::string& config_json);
    template <typename F>
    void append(F&& encode_fn, bool is_request);
    void run();
    void write_all(const std::vector<uint8_t>& buf);

    int fd_ = -1;
    std::string path_;
    size_t max_pending_ = 64u << 20;
    bool write_through_ = false;
    bool continued_ = false;
    uint64_t next_seq_ = 0;
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<uint8_t> pending_;
    bool wake_ = false;  // under mu_: the writer should not wait out its period
    uint64_t dropped_since_ = 0;  // under mu_
    bool stop_ = false;
    bool closed_ = false;
    std::atomic<uint64_t> requests_{0};
    std::atomic<uint64_t> dropped_total_{0};
    std::string write_error_;
    std::thread thread_;
};

}  // namespace blkrig::trace
