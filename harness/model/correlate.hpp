// Tying the guest's view to the device's. Pure: works on a Run whose
// requests, markers, steps and guest events are loaded (load_run calls it).
//
// 1. The guest's marker reads (one-block reads of the marker region) split
//    its trace into the same segments the device's marker records split
//    the device trace into; each step's guest range is set.
// 2. Guest bios (block_bio_queue, cut at block_split) are attached to the
//    block_rq_issue that covers them: every pending bio of the same
//    operation whose sectors lie inside the request's range.
// 3. Each guest request is matched to the first unmatched device request
//    with the same operation, sector and length in the same segment, then
//    in a neighbouring one (multi-queue can put a request on the other side
//    of a marker). Whatever is left over is a finding (or a note, when the
//    gap is expected: before the guest trace started, after it stopped).
// 4. With the guest's CPU → queue map (Run::queue_of_cpu), each matched
//    device request must be on the queue its issuing CPU maps to (among
//    equal candidates the one on that queue is matched); one that is not
//    is a finding.
#pragma once

#include "model/run_model.hpp"

namespace blkrig::model {

void correlate(Run& run);

// What a device request looks like to the guest: the operation class its
// VIRTIO_BLK_T_* type corresponds to.
GuestOp guest_op_of(uint32_t virtio_type);

}  // namespace blkrig::model
