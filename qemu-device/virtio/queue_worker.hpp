// A running virtqueue: waits for kicks, walks chains, hands them to the
// device, returns them on the used ring and notifies the driver. Either with
// a thread of its own (the default) or served by a SharedLoop: one epoll
// thread for all queues (--io-threads single). docs/performance.md has the
// measurement behind the default.
#pragma once

#include "virtio/adaptive_poll.hpp"
#include "virtio/deferrals.hpp"
#include "virtio/device.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/inflight.hpp"
#include "virtio/split_ring.hpp"

#include <atomic>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <memory>
#include <thread>

namespace blkrig::virtio {

struct QueueSetup {
    uint16_t index = 0;
    RingAddrs addrs;
    uint16_t num = 0;
    uint16_t last_avail = 0;
    bool event_idx = false;
    bool indirect = false;
    int kick_fd = -1;  // borrowed; the session keeps ownership
    int call_fd = -1;  // borrowed, may be -1
    int err_fd = -1;   // borrowed, may be -1
    // Busy-poll up to this long before sleeping (adaptive, AdaptivePoll);
    // 0: never. Threads of their own only: a SharedLoop sleeps at once.
    uint64_t poll_max_ns = 0;
    // This queue's part of the inflight region (INFLIGHT_SHMFD), nullptr
    // without one; inflight_keep keeps its mapping alive.
    uint8_t* inflight = nullptr;
    std::shared_ptr<const void> inflight_keep;
};

class SharedLoop;

// How a session runs its queues.
struct QueueOptions {
    SharedLoop* loop = nullptr;  // one thread for all queues; nullptr: a thread per queue
    uint64_t poll_max_ns = 0;    // QueueSetup::poll_max_ns
};

class QueueWorker {
public:
    // loop == nullptr: the queue gets a thread of its own.
    QueueWorker(QueueSetup setup, std::shared_ptr<const GuestMemory> mem, Device& dev, SharedLoop* loop = nullptr);
    ~QueueWorker();  // stops and joins
    QueueWorker(const QueueWorker&) = delete;
    QueueWorker& operator=(const QueueWorker&) = delete;

    // Stops the thread and returns the next avail index to process. What the
    // device still defers for this queue is completed (a stopped queue must
    // not keep buffers), unless the queue has an inflight region: then it
    // stays in flight there, and the next start (this process or the next
    // one) resubmits it.
    uint16_t stop();
    bool broken() const { return broken_.load(); }

private:
    friend class SharedLoop;
    // What one call to drain() left: nothing to do, more to do (its budget
    // ran out), or a broken queue.
    enum class Drained { idle, more, broken };
    void run();
    // At most one ring's worth of requests per call. A driver can keep the
    // ring busy forever (its used ring laid over its own avail index makes
    // every completion publish a new request), and the stop, the other
    // queues of a shared loop and due completions must still get their turn.
    Drained drain();
    bool resubmit();  // the inflight region's requests first; false when the queue broke
    void notify();
    bool on_kick();   // read the kick, drain; marks broken on failure; true: more to do
    bool step();      // drain once; marks broken on failure; true: more to do
    void on_inbox();  // deferred completions that came due
    void on_exec();   // asynchronous I/O that finished
    void submitted(Completion& c);  // after process(): complete, defer or hand to the engine
    void complete(Completion& c);
    void signal_broken();
    // Spins until the ring has buffers or the engine finished something
    // (true), or until deadline_ns (false).
    bool spin(uint64_t deadline_ns) const;

    QueueSetup s_;
    std::shared_ptr<const GuestMemory> mem_;
    Device& dev_;
    SplitRing ring_;
    std::optional<InflightQueue> inflight_;
    std::deque<Resubmit> resubmit_;
    Deferrals* deferrals_ = nullptr;
    std::unique_ptr<AsyncExec> exec_;
    Inbox inbox_;
    int stop_fd_ = -1;
    std::atomic<bool> broken_{false};
    std::atomic<bool> stopping_{false};  // ends a spin at once
    // False while a drain left the driver's notifications off because a
    // spin follows: a driver that sees avail_event behind never kicks, and
    // the spin finds its buffers anyway. Armed again before any sleep.
    bool armed_ = true;
    std::thread thread_;
    SharedLoop* loop_ = nullptr;
    bool stopped_ = false;
    AdaptivePoll poll_;
};

// One thread and one epoll set serving every queue added to it. add() and
// remove() may be called from other threads; once remove() returns, the
// loop no longer touches that queue.
class SharedLoop {
public:
    SharedLoop();
    ~SharedLoop();
    SharedLoop(const SharedLoop&) = delete;
    SharedLoop& operator=(const SharedLoop&) = delete;

    void add(QueueWorker* w);
    void remove(QueueWorker* w);

private:
    void run();
    void forget(QueueWorker* w);  // under mu_: no more events or turns for it

    int epoll_fd_ = -1;
    int stop_fd_ = -1;
    std::mutex mu_;  // held while a queue is drained, and by add/remove
    std::set<QueueWorker*> registered_;
    std::set<QueueWorker*> busy_;  // drained to their budget: served again without waiting
    std::thread thread_;
};

}  // namespace blkrig::virtio
