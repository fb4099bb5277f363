// The error type of the blk layer: a request the device refuses.
#pragma once

#include <cstdint>

namespace blkrig::blk {

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

}  // namespace blkrig::blk
