// Fuzzes the crash runs' write-log reader: any bytes through
// parse_log_writes, then, for a log it accepts, the epochs and a bounded
// enumeration of its states, as `blkrig crash` does. A log is the device's
// output, but a user may hand any file to --record-from: nothing may crash,
// every write must lie inside the file, every state must name writes of its
// epoch in order.
#include "crash/log_writes.hpp"
#include "crash/states.hpp"

#include <cstdint>
#include <cstdlib>
#include <span>

using namespace blkrig::crash;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    WriteLogFile wl;
    try {
        wl = parse_log_writes(std::span<const uint8_t>(data, size));
    } catch (const LogError&) {
        return 0;
    }
    size_t writes = 0;
    for (const auto& e : wl.entries) {
        if (e.kind != LogEntry::Kind::write) continue;
        ++writes;
        // The data a state would copy is inside the file (no overflow on the way).
        if (e.nr_sectors > size / 512 || e.data_offset > size || e.nr_sectors * 512 > size - e.data_offset) std::abort();
    }
    // Cut short exactly when fewer entries than the superblock counts were read whole.
    if (wl.cut_short.empty() != (wl.entries_read == wl.entries_claimed) || wl.entries_read > wl.entries_claimed) std::abort();
    const auto epochs = epochs_of(wl);
    size_t in_epochs = 0;
    for (const auto& ep : epochs) {
        in_epochs += ep.writes.size();
        for (size_t i : ep.writes)
            if (i >= wl.entries.size() || (wl.entries[i].kind != LogEntry::Kind::write && wl.entries[i].kind != LogEntry::Kind::discard)) std::abort();
    }
    if (in_epochs < writes) std::abort();
    // Every mode, bounded: a few seeded subsets, so a long log stays fast.
    for (const char* mode : {"flushes", "random:3"}) {
        Selection sel = parse_selection(mode);
        sel.seed = size;
        const Enumeration en = enumerate(epochs, sel);
        for (const auto& s : en.states) {
            if (s.epoch >= epochs.size()) std::abort();
            for (size_t k = 0; k < s.kept.size(); ++k)
                if (s.kept[k] >= epochs[s.epoch].writes.size() || (k && s.kept[k] <= s.kept[k - 1])) std::abort();
        }
        if (en.total < static_cast<long double>(en.states.size()) && !epochs.empty()) std::abort();
    }
    return 0;
}
