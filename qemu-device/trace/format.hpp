// The blkrig trace file: a header, then length-prefixed records, all little
// endian. Documented in docs/trace-format.md; the reader in trace/reader.hpp
// is the only other place that knows these layouts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blkrig::trace {

inline constexpr char kMagic[8] = {'B', 'L', 'K', 'R', 'I', 'G', 'T', 'R'};
// Version 2 added kReqOneSegment; the reader reads 1 and 2.
inline constexpr uint32_t kVersion = 2;
inline constexpr uint32_t kOldestVersion = 1;

// File header (fixed part, 40 bytes), followed by config_json_len bytes of
// JSON describing the device (geometry, store, options).
struct FileHeader {
    char magic[8];
    uint32_t version;
    uint32_t config_json_len;
    uint64_t t_start_ns;       // CLOCK_MONOTONIC when the trace was opened
    uint64_t capacity_sectors;
    uint32_t logical_block_size;
    uint32_t num_queues;
};
static_assert(sizeof(FileHeader) == 40);

enum class RecordKind : uint16_t {
    request = 1,  // one completed request
    dropped = 2,  // records lost because the writer fell behind
    event = 3,    // something that is not a request: connect, queue broken, ...
    end = 4,      // clean close; a trace without it is incomplete
    marker = 5,   // a read of the marker region: a boundary the guest put in the trace
    fault = 6,    // a fault rule fired on the request with this seq
};

// Every record starts with this; `length` counts the whole record including
// this prefix and is a multiple of 8.
struct RecordPrefix {
    uint32_t length;
    uint16_t kind;
    uint16_t flags;
};
static_assert(sizeof(RecordPrefix) == 8);

inline constexpr uint8_t kStatusOk = 0;      // VIRTIO_BLK_S_OK
inline constexpr uint8_t kStatusIoErr = 1;   // VIRTIO_BLK_S_IOERR
inline constexpr uint8_t kStatusUnsupp = 2;  // VIRTIO_BLK_S_UNSUPP
inline constexpr uint8_t kStatusNone = 255;  // nothing could be reported to the driver

// Request record flags.
inline constexpr uint16_t kReqMalformed = 1;     // the chain held no valid virtio-blk request
inline constexpr uint16_t kReqSegsTruncated = 2; // more segments than recorded lengths
inline constexpr uint16_t kReqResubmitted = 4;   // fetched by an earlier device process or queue start, resubmitted from the inflight region
inline constexpr uint16_t kReqUnfinished = 8;    // still in the inflight region, never completed, when the device process ended (status none)
// One segment of `bytes` bytes, its length not repeated after the body: the
// common request's record is 64 bytes, not 72 (version 2).
inline constexpr uint16_t kReqOneSegment = 16;
// In memory only: a marker read, which the device traces as a marker
// record, never as a request record (the reader refuses the bit).
inline constexpr uint16_t kReqMarker = 32;

inline constexpr uint32_t kTypeUnknown = UINT32_MAX;  // header could not be read
inline constexpr uint16_t kMaxRecordedSegs = 1024;

// RecordPrefix, then this, then nsegs_recorded × uint32 segment lengths,
// zero-padded to 8 bytes (none with kReqOneSegment). It is also the fixed
// part of RequestRecord, the request as the device, the reader and the
// model hold it: written and read in one copy, no field-by-field mapping.
struct RequestBody {
    uint64_t seq = 0;            // arrival order over all queues, from 0
    uint64_t sector = 0;         // first sector (first range for discard/write_zeroes)
    uint64_t bytes = 0;          // payload bytes (bytes covered, for discard/write_zeroes)
    uint64_t t_submit_ns = 0;    // taken off the available ring
    uint64_t t_complete_ns = 0;  // put on the used ring
    uint32_t type = kTypeUnknown;  // VIRTIO_BLK_T_*, or kTypeUnknown
    uint16_t queue = 0;
    uint16_t head = 0;           // descriptor head index
    uint16_t nsegs = 0;          // payload descriptors (ranges, for discard/write_zeroes)
    uint8_t status = kStatusNone;  // VIRTIO_BLK_S_* or kStatusNone
    uint8_t reserved = 0;
    uint16_t nsegs_recorded = 0;  // the file's: set by encode, seg_lens.size() in memory
    // 0 in the file, whose flags are the record prefix's; in memory the
    // record's flags (kReq*), in this slot so the record stays 96 bytes.
    uint16_t flags = 0;
};
static_assert(sizeof(RequestBody) == 56);

struct DroppedBody {
    uint64_t count;  // records lost since the previous dropped record
    uint64_t t_ns;
};

enum class EventCode : uint32_t {
    session_start = 1,
    session_end = 2,
    queue_broken = 3,
    queue_started = 4,
    queue_stopped = 5,
    mark = 6,  // a mark set over the control socket (trace.mark)
    deferred_flushed = 7,  // a stopping queue completed requests a fault still deferred
    power_cut = 8,         // the crash model dropped unflushed writes; the device is off
    released = 9,          // held requests released over the control socket
    restart = 10,          // a new device process continues this trace (after the previous one died)
    left_in_flight = 11,   // a stopping queue left deferred requests in the inflight region for the next start
    resumed = 12,          // a starting queue found requests in flight in the inflight region and resubmits them
};

// RecordPrefix, this, then text_len bytes of UTF-8, zero-padded to 8.
struct EventBody {
    uint64_t t_ns;
    uint32_t code;
    uint16_t queue;
    uint16_t head;
    uint32_t text_len;
    uint32_t reserved;
};
static_assert(sizeof(EventBody) == 24);

struct MarkerBody {
    uint64_t seq;    // from the same sequence as requests: orders markers among them
    uint64_t t_ns;
    uint32_t index;  // marker block index within the marker region
    uint16_t queue;
    uint16_t head;
};
static_assert(sizeof(MarkerBody) == 24);

// A fault record's action when no rule fired: the crash model's device was
// powered off and answered IOERR (rule_id 0). 1..8 are faults::ActionKind.
inline constexpr uint16_t kFaultPowerOff = 9;  // common/ops.hpp: ops::kPowerOff

struct FaultBody {
    uint64_t seq;      // the request it touched
    uint32_t rule_id;  // 0: not a rule (kFaultPowerOff)
    uint16_t action;   // faults::ActionKind (1 ioerr ... 8 lie), or kFaultPowerOff
    uint16_t reserved;
    uint64_t delay_ns;
};
static_assert(sizeof(FaultBody) == 24);

struct EndBody {
    uint64_t t_ns;
    uint64_t requests;       // request records written
    uint64_t dropped;        // records lost in total
};

// Decoded forms, shared by the writer's callers and the reader. A request
// record is the one record of a request from the device to the checks: its
// fixed part is the on-disk RequestBody, and the model's Request is this
// record plus what correlation adds.
struct RequestRecord : RequestBody {
    std::vector<uint32_t> seg_lens;
    // The fault that touched it (rule 0 with kFaultPowerOff: the device was
    // off). The writer puts it in the request's fault record; the model
    // joins that back by seq.
    uint32_t fault_rule = 0;
    uint16_t fault_action = 0;
    uint64_t fault_delay_ns = 0;
};
static_assert(sizeof(RequestRecord) <= 96 || sizeof(void*) != 8, "the model holds a million of these");

struct EventRecord {
    uint64_t t_ns = 0;
    EventCode code{};
    uint16_t queue = 0;
    uint16_t head = 0;
    std::string text;
};

struct MarkerRecord {
    uint64_t seq = 0;
    uint64_t t_ns = 0;
    uint32_t index = 0;
    uint16_t queue = 0;
    uint16_t head = 0;
};

struct FaultRecord {
    uint64_t seq = 0;
    uint32_t rule_id = 0;
    uint16_t action = 0;
    uint64_t delay_ns = 0;
};
const char* fault_action_name(uint16_t action);

const char* event_name(EventCode c);
std::string op_label(uint32_t type);          // "read", "write", ..., "type_N", "invalid"
const char* status_label(uint8_t status);     // "ok", "ioerr", "unsupp", "none"

// Appends the encoded record to out.
void encode(const RequestRecord& r, std::vector<uint8_t>& out);
void encode(const EventRecord& e, std::vector<uint8_t>& out);
void encode(const MarkerRecord& m, std::vector<uint8_t>& out);
void encode(const FaultRecord& f, std::vector<uint8_t>& out);
void encode_dropped(uint64_t count, uint64_t t_ns, std::vector<uint8_t>& out);
void encode_end(uint64_t t_ns, uint64_t requests, uint64_t dropped, std::vector<uint8_t>& out);

}  // namespace blkrig::trace
