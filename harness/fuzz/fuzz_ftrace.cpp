// Fuzzes the guest ftrace parser: any text gives events, never a crash.
#include "model/ftrace.hpp"

#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    (void)blkrig::model::parse_ftrace(std::string_view(reinterpret_cast<const char*>(data), size));
    return 0;
}
