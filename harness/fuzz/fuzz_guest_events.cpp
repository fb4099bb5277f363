// Fuzzes the guest-events.jsonl reader (the flat scanner and its nlohmann
// fallback): any bytes give events or counted bad lines, never a crash, and
// every event points inside the text.
#include "model/guest_events.hpp"

#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const auto g = blkrig::model::parse_guest_events(text);
    for (const auto& e : g.events)
        if (e.offset >= size || e.name >= g.names.size() || e.dev >= g.names.size()) std::abort();
    return 0;
}
