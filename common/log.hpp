// Logging for blkrig-device: one line per event on stderr, prefixed with a
// monotonic timestamp so it lines up with the trace's t_*_ns fields.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <ctime>

namespace blkrig {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

inline std::atomic<int>& log_threshold() {
    static std::atomic<int> level{static_cast<int>(LogLevel::info)};
    return level;
}

inline uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void log_line(LogLevel level, const std::string& text);

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> f, Args&&... args) {
    if (static_cast<int>(level) < log_threshold().load(std::memory_order_relaxed)) return;
    log_line(level, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace blkrig
