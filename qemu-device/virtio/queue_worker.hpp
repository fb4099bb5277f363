// One thread per virtqueue: waits for kicks, walks chains, hands them to the
// device, returns them on the used ring and notifies the driver.
// One thread per queue (rather than one epoll loop for all) keeps queues
// independent, which is what multi-queue guests measure; see docs/architecture.md.
#pragma once

#include "virtio/device.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/split_ring.hpp"

#include <atomic>
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
};

class QueueWorker {
public:
    QueueWorker(QueueSetup setup, std::shared_ptr<const GuestMemory> mem, Device& dev);
    ~QueueWorker();  // stops and joins
    QueueWorker(const QueueWorker&) = delete;
    QueueWorker& operator=(const QueueWorker&) = delete;

    // Stops the thread and returns the next avail index to process.
    uint16_t stop();
    bool broken() const { return broken_.load(); }

private:
    void run();
    bool drain();  // false when the queue broke
    void notify();

    QueueSetup s_;
    std::shared_ptr<const GuestMemory> mem_;
    Device& dev_;
    SplitRing ring_;
    int stop_fd_ = -1;
    std::atomic<bool> broken_{false};
    std::thread thread_;
    bool stopped_ = false;
};

}  // namespace blkrig::virtio
