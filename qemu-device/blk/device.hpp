// virtio-blk device semantics (virtio 1.x 5.2): feature bits and config
// space from the command-line geometry, and the execution of parsed
// requests against a store. Every request, well-formed or not, ends up as
// exactly one trace record.
#pragma once

#include "common/ops.hpp"
#include "blk/request.hpp"
#include "faults/engine.hpp"
#include "store/store.hpp"
#include "store/write_log.hpp"
#include "trace/writer.hpp"
#include "virtio/deferrals.hpp"
#include "virtio/device.hpp"

#include <linux/virtio_blk.h>

#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace blkrig::blk {

struct Geometry {
    uint64_t capacity_sectors = 0;  // what the driver sees, marker region included
    // The last marker_sectors sectors are the marker region: not backed by
    // the store, reads return a fixed pattern, and a one-block read there is
    // traced as a marker (a step boundary the guest puts in the trace).
    uint32_t marker_sectors = 0;
    uint32_t logical_block_size = 512;
    uint32_t seg_max = 126;
    uint32_t size_max = 0;          // 0: not advertised
    uint16_t num_queues = 1;
    uint16_t queue_size = 256;      // largest ring the device accepts
    bool write_cache = true;        // VIRTIO_BLK_F_FLUSH + CONFIG_WCE
    bool read_only = false;
    bool discard = true;
    bool write_zeroes = true;
    uint32_t max_discard_sectors = 1u << 22;
    uint32_t max_discard_seg = 1;
    uint32_t max_write_zeroes_sectors = 1u << 22;
    uint32_t max_write_zeroes_seg = 1;
    std::string serial = "blkrig";
};

// The error type of this layer: a request the device refuses, and whose
// fault that is. status() is the one place it becomes a virtio status.
enum class Refusal {
    none,
    malformed,           // RequestError: the driver built a bad request
    unaligned_length,    // payload not a multiple of 512 bytes
    out_of_range,        // past the capacity
    read_only,           // a modifying request on a read-only device
    unsupported,         // a type or feature the device does not offer
    store_error,         // the store failed (host I/O error)
    injected_ioerr,      // a fault rule said IOERR
    injected_unsupp,     // a fault rule said UNSUPP
    powered_off,         // the crash model cut the power: the device answers nothing but IOERR
};
uint8_t status(Refusal r);
const char* to_string(Refusal r);

// A power cut the device performs by itself when the guest reads a marker
// (the end of a step), so a scenario can cut at an exact point.
struct PowerCutPlan {
    int64_t at_marker = -1;  // -1: none
    store::CutMode mode = store::CutMode::drop_all;
    uint64_t seed = 0;
    double share = 0.5;           // drop_random: the chance each unflushed write is lost
    std::string report_path;      // where the CutReport is written as JSON, may be empty
};

class BlkDevice final : public virtio::Device {
public:
    // wlog: the crash model's write log, nullptr when writes are never lost.
    BlkDevice(Geometry g, store::Store& store, trace::Writer* trace, faults::Engine* faults = nullptr,
              store::WriteLog* wlog = nullptr, PowerCutPlan plan = {});

    uint64_t features() const override;
    void set_features(uint64_t acked) override;
    uint16_t max_queues() const override { return geo_.num_queues; }
    uint16_t max_queue_size() const override { return geo_.queue_size; }
    std::vector<uint8_t> read_config() const override;
    bool write_config(uint32_t offset, std::span<const uint8_t> data) override;
    uint64_t next_seq() override { return seq_.fetch_add(1, std::memory_order_relaxed); }
    void seq_at_least(uint64_t n) override {
        uint64_t cur = seq_.load();
        while (cur < n && !seq_.compare_exchange_weak(cur, n)) {}
    }
    void process(const virtio::DescriptorChain& chain, virtio::Completion& c) override;
    void completed(const virtio::Completion& c) override;
    void queue_broken(uint16_t queue, uint16_t head, const std::string& why) override;
    void note(trace::EventCode code, uint16_t queue, const std::string& text) override;
    virtio::Deferrals* deferrals() override { return &deferrals_; }
    void left_in_flight(std::vector<virtio::Completion>&& left) override;
    void resumed(uint64_t seq) override;
    // Traces the requests left in flight and never resumed, flagged
    // unfinished with status none: the guest never saw them complete.
    // Called once, as the device process ends; returns how many.
    size_t record_unfinished();

    // Loses unflushed writes as the crash model says and turns the device
    // off (every later request fails with IOERR until power_on()). Returns
    // the report; throws std::logic_error without a write log.
    nlohmann::json power_cut(store::CutMode mode, uint64_t seed, double share);
    void power_on();
    bool powered_off() const { return powered_off_.load(); }
    // The --power-cut report could not be written (logged when it happened).
    bool report_failed() const { return report_failed_.load(); }
    bool has_write_log() const { return wlog_ != nullptr; }

    const Geometry& geometry() const { return geo_; }
    // Per-op counts, bytes, errors and latency percentiles (log2 buckets),
    // for the control plane's `stats`.
    nlohmann::json stats_json() const;
    // Marker block index for a request, or -1 if it is not a marker read.
    int64_t marker_index(const Request& r) const;
    bool writeback() const { return writeback_.load(); }

private:
    Refusal execute(const Request& r, uint64_t seq);
    Refusal write(const Request& r, uint64_t seq, const std::vector<iovec>& data, uint64_t bytes);
    Refusal run_fault(const Request& r, uint64_t seq, const faults::Action& a, virtio::Completion& c);
    Refusal check_range(uint64_t sector, uint64_t bytes, uint64_t limit) const;
    uint64_t data_sectors() const { return geo_.capacity_sectors - geo_.marker_sectors; }
    Refusal read(const Request& r);

    Geometry geo_;
    store::Store& store_;
    trace::Writer* trace_;
    faults::Engine* faults_;
    store::WriteLog* wlog_;
    PowerCutPlan plan_;
    virtio::Deferrals deferrals_;
    std::mutex unfinished_mu_;
    std::map<uint64_t, virtio::Completion> unfinished_;  // by seq
    uint64_t start_ns_;
    std::atomic<bool> powered_off_{false};
    std::atomic<bool> report_failed_{false};
    std::atomic<uint64_t> seq_{0};
    std::atomic<uint64_t> acked_{0};
    std::atomic<bool> writeback_;

    struct OpStats {
        std::atomic<uint64_t> count{0}, bytes{0}, errors{0};
        std::array<std::atomic<uint64_t>, 48> latency_log2{};  // bucket b: latency < 2^b ns
    };
    static constexpr size_t kStatOps = std::size(ops::kOps) + 1;  // each op of the table, then "other"
    std::array<OpStats, kStatOps> stats_;
};

}  // namespace blkrig::blk
