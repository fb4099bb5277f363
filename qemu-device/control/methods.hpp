// The control plane's methods: faults, trace marks, statistics, and the
// live configuration written back out as replayable calls.
#pragma once

#include "blk/device.hpp"
#include "control/rpc.hpp"
#include "faults/engine.hpp"
#include "trace/writer.hpp"

namespace blkrig::control {

MethodTable device_methods(faults::Engine& engine, blk::BlkDevice& dev, trace::Writer* trace);

}  // namespace blkrig::control
