// The crash states a recorded write log allows, and which of them to check.
//
// The log splits into epochs at its flushes: epoch e holds the writes after
// flush e-1 and up to flush e (the last epoch: the writes after the last
// flush). A state is the writes of every epoch before e, all durable, plus a
// subset of epoch e's, applied in the order they were logged. The full subset of
// an epoch that ends in a flush is the same disk as the empty subset of the
// next: it is counted and checked once, as the latter. Pure.
#pragma once

#include "crash/log_writes.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace blkrig::crash {

struct Epoch {
    std::vector<size_t> writes;  // indices into the log's entries: writes and discards
    std::vector<uint64_t> sectors;  // for each: a write's sectors, 0 for a discard (never torn)
    int64_t last_marker = -1;    // the last step marker logged before the epoch ended
    std::vector<int64_t> markers;  // the step markers logged in it, in order (a promise is due from the epoch after its step's)
    bool flushed = false;        // ends in a flush (every epoch but perhaps the last)
};

std::vector<Epoch> epochs_of(const WriteLogFile& log);

struct Selection {
    enum class Mode { flushes, all, random };
    Mode mode = Mode::flushes;
    uint32_t n = 0;  // random: states per epoch
    uint64_t seed = 0;
    bool torn = false;  // also tear the write after each in-order prefix ([crash.check] torn)
};

// "flushes", "all" or "random:N" (N from 1 to 100000); throws std::invalid_argument naming the text.
Selection parse_selection(const std::string& text);

struct State {
    size_t epoch = 0;
    std::vector<size_t> kept;  // positions in the epoch's writes, ascending
    std::string why;           // "flush", "prefix", "subset", "seeded", "torn"
    // "torn": the write at this position of the epoch, after the kept ones,
    // reached the disk only in part: its first torn_sectors sectors.
    int64_t torn_write = -1;
    uint64_t torn_sectors = 0;
};

struct Enumeration {
    std::vector<State> states;
    long double total = 0;  // distinct states the log allows
};

// Within an epoch of up to kEveryUpTo writes, "all" takes every subset; of
// more, kSeeded seeded ones. Every mode but "flushes" also takes each epoch's
// in-order prefixes (the empty and the full subset among them), and with
// torn, each prefix followed by the next write torn after its first sector
// and after half its sectors (a device writes whole 512-byte sectors).
inline constexpr size_t kEveryUpTo = 12;
inline constexpr uint32_t kSeeded = 256;

Enumeration enumerate(const std::vector<Epoch>& epochs, const Selection& sel);

}  // namespace blkrig::crash
