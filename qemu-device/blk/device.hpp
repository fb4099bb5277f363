// virtio-blk device semantics (virtio 1.x 5.2): the execution of parsed
// requests against a store. Every request, well-formed or not, ends up as
// exactly one trace record. Its other concerns each have a file: feature
// bits and config space (config.cpp), the marker region (markers), per-op
// stats (stats), the power cut (power_cut); what a fault rule's action
// means is faults/effect's.
#pragma once

#include "blk/async_exec.hpp"
#include "blk/geometry.hpp"
#include "blk/power_cut.hpp"
#include "blk/refusal.hpp"
#include "blk/request.hpp"
#include "blk/stats.hpp"
#include "faults/effect.hpp"
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
    // The store's own engine for each queue (io_uring on a file), unless
    // use_async(false); where the store has none, requests run on the queue
    // thread, and the log says why once.
    std::unique_ptr<virtio::AsyncExec> async_exec(uint16_t queue, uint16_t depth) override;
    void use_async(bool on) { async_ = on; }
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
    bool writeback() const { return writeback_.load(); }

private:
    Refusal execute(const Request& r, uint64_t seq);
    Refusal write(const Request& r, uint64_t seq, const std::vector<iovec>& data, uint64_t bytes);
    Refusal apply(const Request& r, uint64_t seq, const faults::Effect& e, virtio::Completion& c);
    Refusal check_range(uint64_t sector, uint64_t bytes, uint64_t limit) const;
    uint64_t data_sectors() const { return geo_.capacity_sectors - geo_.marker_sectors; }
    Refusal read(const Request& r);
    // Hands a plain read, write or flush to the queue's engine (no: run it here).
    StoreExec::Started start_async(const Request& r, virtio::Completion& c);

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
    bool async_ = true;
    std::atomic<bool> async_noted_{false};

    Stats stats_;
};

}  // namespace blkrig::blk
