// Completions that do not happen at once: a request the device finished but
// keeps off the used ring for a while (delay), until a later request of its
// queue completed (reorder) or until someone releases it over the control
// plane (hold). Only the queue's own thread touches its ring, so a due
// completion is handed to that queue's Inbox and its eventfd is signalled;
// the queue then puts it on the used ring.
#pragma once

#include "virtio/device.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace blkrig::virtio {

// Due completions for one queue, filled from any thread, emptied by the queue.
class Inbox {
public:
    Inbox();
    ~Inbox();
    Inbox(const Inbox&) = delete;
    Inbox& operator=(const Inbox&) = delete;

    int fd() const { return efd_; }  // readable when completions are waiting
    void put(Completion c);
    std::vector<Completion> take();  // also clears the eventfd
    // Completions Deferrals still keeps for this queue (read on the request path: no lock).
    uint32_t waiting() const { return waiting_.load(std::memory_order_relaxed); }

private:
    friend class Deferrals;
    std::atomic<uint32_t> waiting_{0};
    int efd_ = -1;
    std::mutex mu_;
    std::vector<Completion> ready_;
};

struct HeldRequest {
    uint64_t seq;
    uint16_t queue;
    uint32_t rule;
    uint32_t type;
    uint64_t sector;
    uint64_t held_ns;  // how long it has been held
};

class Deferrals {
public:
    // A reordered request that no later request overtakes within this time
    // completes anyway, so a lone request cannot hang.
    static constexpr uint64_t kReorderLimitNs = 1'000'000'000;

    Deferrals();
    ~Deferrals();  // stops the timer thread; undelivered completions are dropped (queues take theirs first)
    Deferrals(const Deferrals&) = delete;
    Deferrals& operator=(const Deferrals&) = delete;

    // c.defer says how long: Defer::until, Defer::hold or Defer::reorder.
    void add(Completion c, Inbox* inbox);
    // A request of the queue behind inbox went on the used ring: counts for
    // the reordered requests waiting there.
    void completed_on(Inbox* inbox);
    // Held requests go to their queues. seq / rule narrow it; none: all.
    // Returns the seqs released.
    std::vector<uint64_t> release(std::optional<uint64_t> seq, std::optional<uint32_t> rule);
    std::vector<HeldRequest> held() const;
    // The queue stops: everything still waiting for it, to complete now.
    std::vector<Completion> take_all(Inbox* inbox);

private:
    struct Item {
        Completion c;
        Inbox* inbox;
        uint64_t due_ns;      // 0: none (held)
        uint32_t overtakes;   // reorder: completions still to wait for
        uint64_t since_ns;
    };
    void run();
    // Removes an item (under mu_), keeping the counters the request path reads.
    std::list<Item>::iterator erase(std::list<Item>::iterator i);
    // Off the list (no longer counted as waiting), then into its inbox.
    std::list<Item>::iterator deliver(std::list<Item>::iterator i);

    mutable std::mutex mu_;
    std::atomic<size_t> reorders_{0};  // reorder items: completed_on has nothing to do without them
    std::condition_variable cv_;
    std::list<Item> items_;
    bool stop_ = false;
    std::thread timer_;
};

}  // namespace blkrig::virtio
