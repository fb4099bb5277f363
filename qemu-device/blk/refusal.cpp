#include "blk/refusal.hpp"

#include <linux/virtio_blk.h>

namespace blkrig::blk {

uint8_t status(Refusal r) {
    switch (r) {
    case Refusal::none: return VIRTIO_BLK_S_OK;
    case Refusal::unsupported:
    case Refusal::injected_unsupp: return VIRTIO_BLK_S_UNSUPP;
    default: return VIRTIO_BLK_S_IOERR;
    }
}

const char* to_string(Refusal r) {
    switch (r) {
    case Refusal::none: return "ok";
    case Refusal::malformed: return "malformed request";
    case Refusal::unaligned_length: return "payload not a multiple of 512 bytes";
    case Refusal::out_of_range: return "beyond the capacity";
    case Refusal::read_only: return "device is read-only";
    case Refusal::unsupported: return "unsupported request type";
    case Refusal::store_error: return "store I/O error";
    case Refusal::injected_ioerr: return "fault rule: IOERR";
    case Refusal::injected_unsupp: return "fault rule: UNSUPP";
    case Refusal::powered_off: return "device powered off (power cut)";
    }
    return "?";
}

}  // namespace blkrig::blk
