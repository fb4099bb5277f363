// Where the blocks live. Every back end sits behind this one interface so
// the block semantics and the fault engine see the same operations; a file
// store also offers each queue an io_uring engine (AsyncQueue). Offsets and
// lengths are bytes; results are 0 or -errno.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace blkrig::store {

// One queue's asynchronous I/O on a store (io_uring on a file store):
// requests are queued, submitted in a batch, and reaped when fd() is
// readable. Each carries a tag of the caller's. Results are 0 or -errno, as
// the synchronous calls give them; a short transfer is finished
// synchronously inside reap(), so a caller never sees one.
class AsyncQueue {
public:
    virtual ~AsyncQueue() = default;
    // Readable when completions wait (an eventfd).
    virtual int fd() const = 0;
    // False when the queue cannot take it (full, or a buffer O_DIRECT cannot
    // use): the caller runs the request synchronously instead.
    virtual bool read(uint64_t offset, std::span<const iovec> iov, uint64_t tag) = 0;
    virtual bool write(uint64_t offset, std::span<const iovec> iov, uint64_t tag) = 0;
    virtual bool flush(uint64_t tag) = 0;
    // Bytes moved at once, without blocking, where the store has a page
    // cache that holds them (RWF_NOWAIT): a whole transfer done here never
    // needs the queue. 0 where nothing could be moved that way.
    virtual size_t try_cached(bool write, uint64_t offset, std::span<const iovec> iov) {
        (void)write, (void)offset, (void)iov;
        return 0;
    }
    // What was queued goes to the kernel.
    virtual void submit() = 0;
    // Calls done(tag, result) for each finished request; wait: until none is
    // in flight.
    virtual void reap(const std::function<void(uint64_t, int)>& done, bool wait) = 0;
    virtual size_t in_flight() const = 0;
    // Completions are waiting to be reaped, without a system call: what a
    // queue that busy-polls looks at instead of sleeping on fd().
    virtual bool ready() const { return false; }
};

class Store {
public:
    virtual ~Store() = default;
    virtual uint64_t size() const = 0;
    virtual int read(uint64_t offset, std::span<const iovec> iov) = 0;
    virtual int write(uint64_t offset, std::span<const iovec> iov) = 0;
    virtual int flush() = 0;
    virtual int discard(uint64_t offset, uint64_t len) = 0;
    virtual int write_zeroes(uint64_t offset, uint64_t len) = 0;
    virtual std::string describe() const = 0;
    // Why the synchronous path serves this store better than an
    // asynchronous queue would; "" where the queue is the better one.
    virtual std::string sync_is_better() const { return ""; }
    // A queue of its own for asynchronous I/O, at most depth requests in
    // flight; nullptr (and *why says why) where the store has none.
    virtual std::unique_ptr<AsyncQueue> async_queue(unsigned depth, std::string* why) {
        if (why) *why = "the store has no asynchronous engine";
        (void)depth;
        return nullptr;
    }
};

struct StoreError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A raw image file. direct=true opens it O_DIRECT (unaligned guest buffers
// go through an aligned bounce buffer). Throws StoreError naming the path.
std::unique_ptr<Store> open_file(const std::string& path, bool read_only, bool direct);

// Zero-filled memory of the given size.
std::unique_ptr<Store> make_ram(uint64_t size);

// Writes go to memory; reads fall through to base where nothing was written.
// The base is only ever read.
std::unique_ptr<Store> make_overlay(std::unique_ptr<Store> base);

}  // namespace blkrig::store
