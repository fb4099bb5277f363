// What a virtio device offers the transport (the vhost-user session): its
// feature bits, its config space, and the handling of one descriptor chain.
// The transport owns rings, memory and notifications; the device owns
// meaning. Called from queue threads concurrently: implementations must be
// thread-safe.
#pragma once

#include "trace/format.hpp"
#include "virtio/chain.hpp"

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace blkrig::virtio {

inline constexpr int kFIndirectDesc = 28;
inline constexpr int kFEventIdx = 29;
inline constexpr int kFVersion1 = 32;

class Deferrals;
class AsyncExec;

// When a processed request goes on the used ring.
enum class Defer : uint8_t {
    none,     // at once
    until,    // at defer_until_ns (monotonic)
    reorder,  // after reorder_after later requests of its queue completed
    hold,     // when released over the control plane
    io,       // when its I/O finished: process() handed it to the queue's AsyncExec
};

// One request from the moment it left the available ring to the moment it
// went on the used ring; the record is the trace's view of it (and carries
// the fault that touched it), the rest is transport: what goes on the used
// ring, and when.
struct Completion {
    uint32_t used_len = 0;        // bytes the device wrote into the chain
    trace::RequestRecord record;  // seq, queue, head, t_submit_ns set by the queue
    uint32_t queue_depth = 1;     // requests the queue had outstanding, this one included
    Defer defer = Defer::none;
    uint64_t defer_until_ns = 0;
    uint32_t reorder_after = 0;
    AsyncExec* exec = nullptr;    // the queue's, for process() to hand I/O to; nullptr: none
};

// Requests whose I/O runs asynchronously. Each queue has one of its own
// (Device::async_exec). process() starts a request's I/O there and marks the
// completion Defer::io; the queue hands the completion over (hold), submits
// after each batch, polls fd() and reaps what finished, status and used_len
// set. A stopping queue waits for all of it: a buffer must not be written
// after its queue is gone.
class AsyncExec {
public:
    virtual ~AsyncExec() = default;
    virtual int fd() const = 0;
    virtual void hold(Completion&& c) = 0;
    virtual void submit() = 0;
    virtual size_t in_flight() const = 0;
    // Finished requests wait to be reaped (looked at without a system call).
    virtual bool ready() const { return false; }
    // Appends the finished requests; wait: until none is in flight.
    virtual void reap(std::vector<Completion>& done, bool wait) = 0;
};

class Device {
public:
    virtual ~Device() = default;
    virtual uint64_t features() const = 0;
    virtual void set_features(uint64_t acked) = 0;
    virtual uint16_t max_queues() const = 0;
    virtual uint16_t max_queue_size() const = 0;
    virtual std::vector<uint8_t> read_config() const = 0;
    // False if the driver wrote a field that is not writable.
    virtual bool write_config(uint32_t offset, std::span<const uint8_t> data) = 0;
    virtual uint64_t next_seq() = 0;
    // Later next_seq() calls return at least n (seqs an earlier device
    // process gave out: a continued trace, requests in the inflight region).
    virtual void seq_at_least(uint64_t n) { (void)n; }

    // Handles one chain; fills c.used_len and c.record (except t_complete_ns).
    virtual void process(const DescriptorChain& chain, Completion& c) = 0;
    // Called once the chain is on the used ring.
    virtual void completed(const Completion& c) = 0;
    // A queue hit a chain it cannot process; the queue stops.
    virtual void queue_broken(uint16_t queue, uint16_t head, const std::string& why) = 0;
    virtual void note(trace::EventCode code, uint16_t queue, const std::string& text) = 0;
    // Where completions that process() deferred wait; nullptr if it never defers.
    virtual Deferrals* deferrals() { return nullptr; }
    // The queue's asynchronous engine, made as the queue starts; nullptr:
    // every request completes within process().
    virtual std::unique_ptr<AsyncExec> async_exec(uint16_t queue, uint16_t depth) {
        (void)queue, (void)depth;
        return nullptr;
    }
    // A stopping queue left these in the inflight region, not completed; a
    // later start may resubmit them (resumed()). Those never resumed are
    // the device's to account for when it ends.
    virtual void left_in_flight(std::vector<Completion>&& left) { (void)left; }
    virtual void resumed(uint64_t seq) { (void)seq; }
};

}  // namespace blkrig::virtio
