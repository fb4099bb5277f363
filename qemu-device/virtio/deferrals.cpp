#include "virtio/deferrals.hpp"

#include "common/log.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace blkrig::virtio {

Inbox::Inbox() {
    efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd_ < 0) throw std::runtime_error(fmt::format("eventfd: {}", std::strerror(errno)));
}

Inbox::~Inbox() { ::close(efd_); }

void Inbox::put(Completion c) {
    {
        std::lock_guard lock(mu_);
        ready_.push_back(std::move(c));
    }
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(efd_, &one, sizeof one);
}

std::vector<Completion> Inbox::take() {
    uint64_t v;
    [[maybe_unused]] auto n = ::read(efd_, &v, sizeof v);
    std::lock_guard lock(mu_);
    return std::exchange(ready_, {});
}

Deferrals::Deferrals() : timer_([this] { run(); }) {}

Deferrals::~Deferrals() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    timer_.join();
}

void Deferrals::add(Completion c, Inbox* inbox) {
    const uint64_t now = monotonic_ns();
    Item it{std::move(c), inbox, 0, 0, now};
    switch (it.c.defer) {
    case Defer::until: it.due_ns = it.c.defer_until_ns; break;
    case Defer::reorder:
        it.overtakes = std::max<uint32_t>(1, it.c.reorder_after);
        it.due_ns = now + kReorderLimitNs;
        break;
    case Defer::hold: break;
    case Defer::none:
    case Defer::io:  // never given here: the queue's engine has it (QueueWorker::submitted)
        inbox->put(std::move(it.c));
        return;
    }
    {
        std::lock_guard lock(mu_);
        if (it.c.defer == Defer::reorder) reorders_.fetch_add(1, std::memory_order_relaxed);
        inbox->waiting_.fetch_add(1, std::memory_order_relaxed);
        items_.push_back(std::move(it));
    }
    cv_.notify_all();
}

std::list<Deferrals::Item>::iterator Deferrals::erase(std::list<Item>::iterator i) {
    if (i->c.defer == Defer::reorder) reorders_.fetch_sub(1, std::memory_order_relaxed);
    i->inbox->waiting_.fetch_sub(1, std::memory_order_relaxed);
    return items_.erase(i);
}

// The count goes down before the inbox is readable: a queue that wakes on
// it and takes the completion never finds it still counted as waiting.
std::list<Deferrals::Item>::iterator Deferrals::deliver(std::list<Item>::iterator i) {
    Inbox* inbox = i->inbox;
    Item item = std::move(*i);
    i->c.defer = item.c.defer;  // erase() counts by the kind; a moved-from value is not relied on
    auto next = erase(i);
    inbox->put(std::move(item.c));
    return next;
}

void Deferrals::completed_on(Inbox* inbox) {
    // Called after every completion: without reordered requests, no lock.
    if (reorders_.load(std::memory_order_relaxed) == 0) return;
    std::lock_guard lock(mu_);
    for (auto i = items_.begin(); i != items_.end();) {
        if (i->inbox == inbox && i->c.defer == Defer::reorder && --i->overtakes == 0) {
            i = deliver(i);
        } else {
            ++i;
        }
    }
}

std::vector<uint64_t> Deferrals::release(std::optional<uint64_t> seq, std::optional<uint32_t> rule) {
    std::vector<uint64_t> out;
    std::lock_guard lock(mu_);
    for (auto i = items_.begin(); i != items_.end();) {
        if (i->c.defer == Defer::hold && (!seq || i->c.record.seq == *seq) && (!rule || i->c.record.fault_rule == *rule)) {
            out.push_back(i->c.record.seq);
            i = deliver(i);
        } else {
            ++i;
        }
    }
    return out;
}

std::vector<HeldRequest> Deferrals::held() const {
    const uint64_t now = monotonic_ns();
    std::vector<HeldRequest> out;
    std::lock_guard lock(mu_);
    for (const auto& i : items_)
        if (i.c.defer == Defer::hold)
            out.push_back({i.c.record.seq, i.c.record.queue, i.c.record.fault_rule, i.c.record.type, i.c.record.sector, now - i.since_ns});
    return out;
}

std::vector<Completion> Deferrals::take_all(Inbox* inbox) {
    std::vector<Completion> out;
    std::lock_guard lock(mu_);
    for (auto i = items_.begin(); i != items_.end();) {
        if (i->inbox == inbox) {
            out.push_back(std::move(i->c));
            i = erase(i);
        } else {
            ++i;
        }
    }
    return out;
}

void Deferrals::run() {
    std::unique_lock lock(mu_);
    while (!stop_) {
        uint64_t next = UINT64_MAX;
        const uint64_t now = monotonic_ns();
        for (auto i = items_.begin(); i != items_.end();) {
            if (i->due_ns != 0 && i->due_ns <= now) {
                i = deliver(i);
            } else {
                if (i->due_ns != 0) next = std::min(next, i->due_ns);
                ++i;
            }
        }
        if (next == UINT64_MAX) cv_.wait(lock);
        else cv_.wait_for(lock, std::chrono::nanoseconds(next - now));
    }
}

}  // namespace blkrig::virtio
