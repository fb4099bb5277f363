// The virtio-serial ports the agent reports on (blkrig.results,
// blkrig.events), found by name in /sys/class/virtio-ports.
#pragma once

#include "sys.hpp"

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace blkrig::agent {

inline constexpr const char* kResultsPort = "blkrig.results";
inline constexpr const char* kEventsPort = "blkrig.events";

class Port {
public:
    Port() = default;
    Port(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
    bool valid() const { return fd_.valid(); }
    const std::string& name() const { return name_; }
    // All of `data`, or SysError: a write that makes no progress for
    // kStallLimit counts as failed, so a host that stops reading cannot
    // hang the guest.
    void write(std::string_view data);

    static constexpr std::chrono::seconds kStallLimit{30};

private:
    UniqueFd fd_;
    std::string name_;
};

struct Ports {
    Port results;
    Port events;             // invalid if the host did not give one
    std::vector<std::string> seen;  // every port name found
};

// Waits up to `wait` for the results port (Fatal if it does not come) and
// then up to kEventsGrace for the events port.
inline constexpr std::chrono::milliseconds kEventsGrace{500};
Ports open_ports(std::chrono::milliseconds wait);

}  // namespace blkrig::agent
