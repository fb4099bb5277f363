// The guest's ftrace text (/sys/kernel/tracing/trace, function tracer plus
// block events) turned into structured events. Pure: text in, events out;
// lines it does not understand are kept as {"event": "unparsed", "raw": ...}
// rather than dropped.
#pragma once

#include <nlohmann/json.hpp>

#include <string_view>
#include <vector>

namespace blkrig::model {

// One JSON object per trace line, in order:
//   {"ts": 3.123456, "task": "dd", "pid": 76, "cpu": 0, "event": "function", "function": "do_mpage_readpage", "parent": "mpage_readahead"}
//   {"ts": ..., "event": "block_bio_queue", "dev": "254,0", "rwbs": "RA", "sector": 2051, "nsect": 32, "comm": "dd"}
//   {"ts": ..., "event": "block_rq_issue", "dev": "254,0", "rwbs": "RA", "bytes": 16384, "sector": 2051, "nsect": 32, ...}
//   {"ts": ..., "event": "block_rq_complete", ..., "error": 0}
//   {"ts": ..., "event": "block_split", "sector": 2051, "new_sector": 2307, ...}
std::vector<nlohmann::json> parse_ftrace(std::string_view text);

}  // namespace blkrig::model
