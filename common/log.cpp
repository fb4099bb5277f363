#include "common/log.hpp"

#include <cstdio>
#include <mutex>

namespace blkrig {

void log_line(LogLevel level, const std::string& text) {
    static std::mutex mu;
    static const char* names[] = {"debug", "info", "warn", "error"};
    const uint64_t now = monotonic_ns();
    std::lock_guard lock(mu);
    std::fprintf(stderr, "blkrig-device[%llu.%06llu] %s: %s\n",
                 static_cast<unsigned long long>(now / 1'000'000'000ull),
                 static_cast<unsigned long long>((now / 1000) % 1'000'000ull),
                 names[static_cast<int>(level)], text.c_str());
}

}  // namespace blkrig
