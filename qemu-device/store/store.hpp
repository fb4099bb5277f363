// Where the blocks live. Every back end sits behind this one interface so
// the block semantics, the fault engine and (later) an io_uring engine see
// the same operations. Offsets and lengths are bytes; results are 0 or -errno.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace blkrig::store {

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
