// Fuzzes the trace reader: any bytes either parse (possibly marked
// truncated) or raise ReadError.
#include "trace/reader.hpp"

using namespace blkrig;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const auto t = trace::parse_trace(std::span(data, size));
        (void)t.incompleteness();
    } catch (const trace::ReadError&) {
    }
    return 0;
}
