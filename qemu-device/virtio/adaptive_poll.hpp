// How long a queue thread busy-polls before it sleeps (--poll-us). A
// request or a finished transfer that arrives inside the window is served
// without the wake-up a sleeping thread costs (tens of microseconds on a
// VM: at queue depth 1 that wake-up is most of a request's round trip).
// The window adapts the way QEMU's IOThreads adapt theirs: it grows while
// waits end within the largest window, and drops to nothing after a longer
// one, so a queue that is idle, or fed more slowly than that, never spins.
// Pure: times in, a window out (unit_queue_worker tests it).
#pragma once

#include <algorithm>
#include <cstdint>

namespace blkrig::virtio {

class AdaptivePoll {
public:
    static constexpr uint64_t kFirstNs = 4000;

    explicit AdaptivePoll(uint64_t max_ns) : max_(max_ns) {}

    // How long to poll before the next sleep; 0: sleep at once.
    uint64_t window() const { return ns_; }
    uint64_t max() const { return max_; }

    // A wait ended after waited_ns, polling included.
    void waited(uint64_t waited_ns) {
        if (max_ == 0 || waited_ns <= ns_) return;  // served inside the window: keep it
        if (waited_ns > max_) {
            ns_ = 0;  // polling would not have caught it: stop spinning
            return;
        }
        if (ns_ < max_) ns_ = std::min(max_, ns_ ? ns_ * 2 : kFirstNs);
    }

private:
    uint64_t max_;
    uint64_t ns_ = 0;
};

}  // namespace blkrig::virtio
