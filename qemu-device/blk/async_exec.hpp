// A queue's asynchronous execution of plain reads, writes and flushes on
// the store's own engine (io_uring on a file store): BlkDevice::process
// starts the I/O here, and the request completes, with its status, when the
// queue reaps it. Everything the sync path does more (faults, markers, the
// crash model's write log, write-through, the marker region) stays there:
// such a request never comes here, so its trace and timing are as before.
#pragma once

#include "blk/request.hpp"
#include "store/store.hpp"
#include "virtio/device.hpp"

#include <memory>
#include <unordered_map>

namespace blkrig::blk {

class StoreExec final : public virtio::AsyncExec {
public:
    StoreExec(std::unique_ptr<store::AsyncQueue> q, uint16_t queue) : q_(std::move(q)), queue_(queue) {}
    int fd() const override { return q_->fd(); }
    // queued: the request's I/O is in flight (c.defer becomes Defer::io);
    // finished: it was all moved from or to the page cache at once, and
    // completes now like a synchronous one; no: the engine cannot take it,
    // and the caller runs it synchronously.
    enum class Started { no, queued, finished };
    Started start(const Request& r, virtio::Completion& c);
    void hold(virtio::Completion&& c) override;
    void submit() override { q_->submit(); }
    size_t in_flight() const override { return q_->in_flight(); }
    bool ready() const override { return q_->ready(); }
    void reap(std::vector<virtio::Completion>& done, bool wait) override;

private:
    struct Pending {
        virtio::Completion c;
        uint8_t* status = nullptr;  // in guest memory, valid until the chain is used
        uint32_t data_bytes = 0;
        bool returns_data = false;
    };
    std::unique_ptr<store::AsyncQueue> q_;
    uint16_t queue_;
    std::unordered_map<uint64_t, Pending> pending_;  // by seq
};

}  // namespace blkrig::blk
