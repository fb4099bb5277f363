// Small system helpers for PID 1: owned descriptors, sysfs/procfs files,
// the console, the clock. Errors carry the call, what it was applied to and
// errno, so a message says exactly what failed.
#pragma once

#include "common/fd.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace blkrig::agent {

// The device's owned-descriptor type (header-only, no dependencies).
using blkrig::UniqueFd;

// A system call that failed: "open /dev/vda: ENXIO".
class SysError : public std::runtime_error {
public:
    SysError(const std::string& call, const std::string& target, int err);
    int err() const { return err_; }

private:
    int err_;
};

// Something that ends the run: the agent reports it and powers off.
class Fatal : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Whole file (sysfs, procfs, tracefs, the run description).
std::string read_text(const std::string& path);
// One write(2) of `text` (sysfs attributes want the value in one write).
void write_text(const std::string& path, std::string_view text);
std::string trim(std::string_view s);

int64_t monotonic_ns();

// /sys/kernel/rcu_expedited set to 1 while it lives (or until restore()),
// then back to what it was. Where the file is missing or refuses the
// write, nothing changes.
class ExpeditedRcu {
public:
    ExpeditedRcu();
    ~ExpeditedRcu() { restore(); }
    ExpeditedRcu(const ExpeditedRcu&) = delete;
    ExpeditedRcu& operator=(const ExpeditedRcu&) = delete;
    // Sets it back; returns what the file reads then ("" if unreadable).
    std::string restore();
    const std::string& before() const { return before_; }  // "" if unreadable

private:
    std::string before_;
    bool changed_ = false;
};

// Console lines for people: "blkrig-agent: ..." and "BLKRIG-AGENT error: ...".
void say(std::string_view msg);
void say_error(std::string_view msg);

// Memory aligned for O_DIRECT.
class AlignedBuffer {
public:
    explicit AlignedBuffer(size_t size);
    ~AlignedBuffer();
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    uint8_t* data() { return p_; }
    size_t size() const { return size_; }

private:
    uint8_t* p_;
    size_t size_;
};

}  // namespace blkrig::agent
