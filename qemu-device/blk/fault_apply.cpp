// Carrying out a fault rule's effect (faults::effect_of decides it): defer
// the completion, run all, part or none of the request, corrupt the data
// read or written, or crash the process; then the status the rule names.
#include "blk/device.hpp"
#include "blk/iov.hpp"
#include "common/log.hpp"

#include <signal.h>
#include <unistd.h>

namespace blkrig::blk {

Refusal BlkDevice::apply(const Request& r, uint64_t seq, const faults::Effect& e, virtio::Completion& c) {
    using Run = faults::Effect::Run;
    switch (e.defer) {
    case faults::Effect::Defer::none: break;
    case faults::Effect::Defer::delay:
        c.defer = virtio::Defer::until;
        c.defer_until_ns = monotonic_ns() + e.delay_ns;
        break;
    case faults::Effect::Defer::hold: c.defer = virtio::Defer::hold; break;
    case faults::Effect::Defer::reorder:
        c.defer = virtio::Defer::reorder;
        c.reorder_after = e.reorder_after;
        break;
    }
    Refusal res = Refusal::none;
    switch (e.run) {
    case Run::all: res = execute(r, seq); break;
    case Run::none: break;
    case Run::prefix:
        if (e.keep_bytes) res = write(r, seq, iov_prefix(r.data, e.keep_bytes), e.keep_bytes);
        else if (geo_.read_only) res = Refusal::read_only;
        break;
    case Run::corrupt_read:
        res = execute(r, seq);
        if (res == Refusal::none) iov_xor_byte(r.data, e.offset, e.mask);
        break;
    case Run::corrupt_write: {
        auto copy = iov_copy(r.data, r.data_bytes);
        copy[e.offset] ^= e.mask;
        res = write(r, seq, {iovec{copy.data(), copy.size()}}, copy.size());
        break;
    }
    case Run::crash:
        // A back-end crash mid-request: nothing is executed, completed or
        // flushed; the request stays in the inflight region for the next
        // process. The trace already holds every record made so far when
        // it is continued (--trace-continue writes through).
        log(LogLevel::warn, "queue {} seq {}: fault rule: crash (SIGKILL) with {} sector {} in flight", c.record.queue, seq,
            trace::op_label(r.type), r.sector);
        ::kill(::getpid(), SIGKILL);
        break;
    }
    if (res != Refusal::none) return res;
    switch (e.status) {
    case faults::Effect::Status::as_run: return Refusal::none;
    case faults::Effect::Status::ioerr: return Refusal::injected_ioerr;
    case faults::Effect::Status::unsupp: return Refusal::injected_unsupp;
    }
    return Refusal::none;
}

}  // namespace blkrig::blk
