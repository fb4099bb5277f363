// What a firing rule does to one request: worked out from the action and
// the request alone (pure, so each action's meaning is tested here), and
// carried out by the device (blk::BlkDevice::apply), which owns the store.
// A rule decides (Engine) and says what its action means (effect_of); the
// device only has the mechanics: run the request, a prefix of a write, or a
// changed copy of one.
#pragma once

#include "faults/rule.hpp"

#include <cstdint>

namespace blkrig::faults {

struct Effect {
    enum class Run : uint8_t {
        all,            // the request as asked
        none,           // nothing reaches the store
        prefix,         // a write's first keep_bytes only (a torn write; 0: none of it)
        corrupt_read,   // the read, then byte `offset` of what it returns XOR mask
        corrupt_write,  // the write, with byte `offset` XOR mask in the store (the guest's buffer untouched)
        crash,          // the device kills itself with the request in flight
    };
    enum class Status : uint8_t {
        as_run,  // what running it gave
        ioerr,   // IOERR, once what ran succeeded (a tear reports the error)
        unsupp,  // UNSUPP
    };
    enum class Defer : uint8_t { none, delay, hold, reorder };

    Run run = Run::all;
    Status status = Status::as_run;
    Defer defer = Defer::none;
    uint64_t keep_bytes = 0;     // prefix
    uint64_t offset = 0;         // corrupt_*
    uint8_t mask = 0;            // corrupt_*
    uint64_t delay_ns = 0;       // delay: from completion of the work to the used ring
    uint32_t reorder_after = 0;  // reorder: later completions of the queue to wait for
};

// TYPE is the request's VIRTIO_BLK_T_*, DATA_BYTES its payload length.
Effect effect_of(const Action& a, uint32_t type, uint64_t data_bytes);

}  // namespace blkrig::faults
