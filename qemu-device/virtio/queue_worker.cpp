#include "virtio/queue_worker.hpp"

#include "common/log.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <variant>

namespace blkrig::virtio {

QueueWorker::QueueWorker(QueueSetup setup, std::shared_ptr<const GuestMemory> mem, Device& dev, SharedLoop* loop)
    : s_(setup), mem_(std::move(mem)), dev_(dev), ring_(s_.addrs, s_.num, s_.last_avail, s_.event_idx),
      deferrals_(dev.deferrals()), exec_(dev.async_exec(s_.index, s_.num)), loop_(loop),
      poll_(loop ? 0 : s_.poll_max_ns) {
    if (s_.inflight) {
        inflight_.emplace(s_.inflight, s_.num);
        auto rec = inflight_->recover(ring_.used_idx());
        if (!rec.fresh) {
            // After a back end died, SET_VRING_BASE carries the used index;
            // what was fetched beyond it is in the region.
            ring_.set_last_avail(rec.last_avail);
            resubmit_.assign(rec.resubmit.begin(), rec.resubmit.end());
            log(resubmit_.empty() ? LogLevel::debug : LogLevel::info, "queue {}: {}", s_.index, rec.note);
            if (!resubmit_.empty()) dev_.note(trace::EventCode::resumed, s_.index, fmt::format("queue {}: {}", s_.index, rec.note));
        }
    }
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) throw std::runtime_error(fmt::format("eventfd: {}", std::strerror(errno)));
    if (loop_) loop_->add(this);
    else thread_ = std::thread([this] { run(); });
}

QueueWorker::~QueueWorker() {
    stop();
    ::close(stop_fd_);
}

uint16_t QueueWorker::stop() {
    if (!stopped_) {
        stopped_ = true;
        if (loop_) {
            loop_->remove(this);
        } else {
            stopping_ = true;
            const uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
            if (thread_.joinable()) thread_.join();
        }
        // I/O under way finishes first: its buffers are the guest's.
        if (exec_ && exec_->in_flight()) {
            std::vector<Completion> done;
            exec_->reap(done, true);
            for (auto& c : done) submitted(c);
        }
        // Nothing else touches the ring now. Take from the deferrals first:
        // the timer may still move one of them into the inbox until then.
        std::vector<Completion> left;
        if (deferrals_) left = deferrals_->take_all(&inbox_);
        auto due = inbox_.take();
        left.insert(left.begin(), std::make_move_iterator(due.begin()), std::make_move_iterator(due.end()));
        if (!left.empty() && inflight_) {
            // Not completed: they stay marked in the inflight region, and the
            // next start resubmits them (held and delayed requests survive).
            log(LogLevel::info, "queue {}: {} deferred request(s) stay in flight as the queue stops", s_.index, left.size());
            dev_.note(trace::EventCode::left_in_flight, s_.index,
                      fmt::format("{} deferred request(s) left in flight at queue stop", left.size()));
            dev_.left_in_flight(std::move(left));
            left.clear();
        }
        if (!left.empty()) {
            log(LogLevel::info, "queue {}: completing {} deferred request(s) as the queue stops", s_.index, left.size());
            dev_.note(trace::EventCode::deferred_flushed, s_.index, fmt::format("{} deferred request(s) completed at queue stop", left.size()));
        }
        for (auto& c : left) complete(c);
    }
    return ring_.last_avail();
}

void QueueWorker::notify() {
    if (s_.call_fd >= 0 && ring_.needs_notify()) {
        const uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(s_.call_fd, &one, sizeof one);
    }
}

bool QueueWorker::resubmit() {
    while (!resubmit_.empty()) {
        const Resubmit r = resubmit_.front();
        resubmit_.pop_front();
        auto walked = walk_chain(ring_.desc(), ring_.num(), r.head, *mem_, s_.indirect);
        if (auto* err = std::get_if<ChainError>(&walked)) {
            dev_.queue_broken(s_.index, r.head, "resubmitting from the inflight region: " + err->message());
            return false;
        }
        // The seq the request got when it was first fetched: it completes once, under it.
        Completion c;
        c.record.t_submit_ns = monotonic_ns();
        c.record.seq = r.has_seq ? r.seq : dev_.next_seq();
        if (r.has_seq) dev_.resumed(r.seq);
        c.record.queue = s_.index;
        c.record.head = r.head;
        c.record.flags |= trace::kReqResubmitted;
        inflight_->fetched(r.head, c.record.seq);
        c.queue_depth = 1u + static_cast<uint32_t>(resubmit_.size()) + ring_.avail_pending() + inbox_.waiting() +
                        static_cast<uint32_t>(exec_ ? exec_->in_flight() : 0);
        c.exec = exec_.get();
        dev_.process(std::get<DescriptorChain>(walked), c);
        submitted(c);
    }
    return true;
}

void QueueWorker::submitted(Completion& c) {
    if (c.defer == Defer::io && exec_) exec_->hold(std::move(c));
    else if (c.defer != Defer::none && c.defer != Defer::io && deferrals_) deferrals_->add(std::move(c), &inbox_);
    else complete(c);
}

void QueueWorker::on_exec() {
    if (!exec_) return;
    std::vector<Completion> done;
    exec_->reap(done, false);
    for (auto& c : done) submitted(c);
}

QueueWorker::Drained QueueWorker::drain() {
    if (!resubmit()) return Drained::broken;
    uint32_t budget = ring_.num();
    for (;;) {
        while (budget > 0) {
            auto head = ring_.pop();
            if (!head) break;
            --budget;
            Completion c;
            c.record.t_submit_ns = monotonic_ns();
            auto walked = walk_chain(ring_.desc(), ring_.num(), *head, *mem_, s_.indirect);
            if (auto* err = std::get_if<ChainError>(&walked)) {
                dev_.queue_broken(s_.index, *head, err->message());
                return Drained::broken;
            }
            // Sequence numbers go to requests only, so a broken chain leaves no gap.
            c.record.seq = dev_.next_seq();
            c.record.queue = s_.index;
            c.record.head = *head;
            c.queue_depth = 1u + ring_.avail_pending() + inbox_.waiting() + static_cast<uint32_t>(exec_ ? exec_->in_flight() : 0);
            // In flight before anything is done for it: a crash from here on resubmits it.
            if (inflight_) inflight_->fetched(*head, c.record.seq);
            c.exec = exec_.get();
            dev_.process(std::get<DescriptorChain>(walked), c);
            submitted(c);
        }
        if (exec_) {
            // The batch goes to the kernel at once; what it finished already
            // (page-cache hits) completes now rather than after a wake-up.
            exec_->submit();
            on_exec();
        }
        if (!ring_.error().empty()) {
            dev_.queue_broken(s_.index, 0, ring_.error());
            return Drained::broken;
        }
        if (budget == 0) return Drained::more;
        if (poll_.window() && !stopping_.load(std::memory_order_relaxed)) {
            // A spin follows (run()): the driver need not kick for what it
            // adds meanwhile. Each kick is a trap and an eventfd write on
            // the driver's side.
            armed_ = false;
            return Drained::idle;
        }
        armed_ = true;
        if (!ring_.arm_and_recheck()) return Drained::idle;
    }
}

bool QueueWorker::step() {
    const Drained d = drain();
    if (d == Drained::broken) signal_broken();
    return d == Drained::more;
}

void QueueWorker::complete(Completion& c) {
    // The spec's order: last_batch_head, the used ring, then the mark cleared
    // with the new used index; recover() settles a crash between them.
    if (inflight_) inflight_->before_used(c.record.head);
    ring_.push_used(c.record.head, c.used_len);
    if (inflight_) inflight_->after_used(c.record.head, ring_.used_idx());
    c.record.t_complete_ns = monotonic_ns();
    dev_.completed(c);
    notify();
    if (deferrals_) deferrals_->completed_on(&inbox_);
}

void QueueWorker::on_inbox() {
    for (auto& c : inbox_.take()) complete(c);
}

void QueueWorker::signal_broken() {
    broken_ = true;
    if (s_.err_fd >= 0) {
        // The front end reports this as a vring error for the queue.
        const uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(s_.err_fd, &one, sizeof one);
    }
}

bool QueueWorker::on_kick() {
    // The kick fd is the front end's blocking eventfd: read only what is there.
    pollfd p{s_.kick_fd, POLLIN, 0};
    uint64_t v;
    if (::poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) [[maybe_unused]] auto n = ::read(s_.kick_fd, &v, sizeof v);
    return step();
}

bool QueueWorker::spin(uint64_t deadline_ns) const {
    do {
        for (int i = 0; i < 64; ++i) {
            if (ring_.avail_pending() != 0 || (exec_ && exec_->ready()) || stopping_.load(std::memory_order_relaxed)) return true;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
    } while (monotonic_ns() < deadline_ns);
    return false;
}

void QueueWorker::run() {
    // Buffers may already be waiting (a ring restarted after SET_VRING_BASE).
    bool more = step();
    pollfd fds[4] = {{s_.kick_fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}, {inbox_.fd(), POLLIN, 0}, {exec_ ? exec_->fd() : -1, POLLIN, 0}};
    while (!broken_) {
        // With work left from the last budget, only look whether a stop or a
        // completion came meanwhile. Otherwise spin a while first (--poll-us):
        // what it finds is served after a look at the fds, without a sleep.
        bool found = false;
        uint64_t t0 = 0;
        if (!more && poll_.max()) {
            t0 = monotonic_ns();
            found = poll_.window() && spin(t0 + poll_.window());
        }
        if (!more && !found && !armed_) {
            // About to sleep: the driver must kick again. What it added
            // between the last look and the arming is served now.
            armed_ = true;
            found = ring_.arm_and_recheck();
        }
        const int r = ::poll(fds, 4, more || found ? 0 : -1);
        if (t0) poll_.waited(monotonic_ns() - t0);
        if (r < 0) {
            if (errno == EINTR) continue;
            log(LogLevel::error, "queue {}: poll failed: {}", s_.index, std::strerror(errno));
            break;
        }
        if (fds[1].revents) break;
        if (fds[0].revents & (POLLERR | POLLNVAL)) {
            log(LogLevel::error, "queue {}: kick fd is no longer valid", s_.index);
            break;
        }
        if (fds[2].revents & POLLIN) on_inbox();
        if ((fds[3].revents & POLLIN) || (found && exec_ && exec_->ready())) on_exec();
        if (fds[0].revents & POLLIN) more = on_kick();
        else if (more || found) more = step();
    }
}

SharedLoop::SharedLoop() {
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (epoll_fd_ < 0 || stop_fd_ < 0) throw std::runtime_error(fmt::format("epoll/eventfd: {}", std::strerror(errno)));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the stop fd
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev);
    thread_ = std::thread([this] { run(); });
}

SharedLoop::~SharedLoop() {
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
    thread_.join();
    ::close(stop_fd_);
    ::close(epoll_fd_);
}

void SharedLoop::add(QueueWorker* w) {
    std::lock_guard lock(mu_);
    // Buffers may already be waiting: drain once before waiting for kicks.
    const bool more = w->step();
    if (w->broken()) return;
    // The tag's low bits tell a kick (0), a due completion (1) and finished I/O (2) apart.
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = reinterpret_cast<uintptr_t>(w);
    epoll_event iev{};
    iev.events = EPOLLIN;
    iev.data.u64 = reinterpret_cast<uintptr_t>(w) | 1u;
    epoll_event xev{};
    xev.events = EPOLLIN;
    xev.data.u64 = reinterpret_cast<uintptr_t>(w) | 2u;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w->s_.kick_fd, &ev) != 0 ||
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w->inbox_.fd(), &iev) != 0 ||
        (w->exec_ && ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w->exec_->fd(), &xev) != 0)) {
        log(LogLevel::error, "queue {}: cannot watch its kick fd: {}", w->s_.index, std::strerror(errno));
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, w->s_.kick_fd, nullptr);
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, w->inbox_.fd(), nullptr);
        return;
    }
    registered_.insert(w);
    if (more) busy_.insert(w);
}

void SharedLoop::remove(QueueWorker* w) {
    std::lock_guard lock(mu_);
    forget(w);
}

void SharedLoop::forget(QueueWorker* w) {
    busy_.erase(w);
    if (registered_.erase(w)) {
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, w->s_.kick_fd, nullptr);
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, w->inbox_.fd(), nullptr);
        if (w->exec_) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, w->exec_->fd(), nullptr);
    }
}

void SharedLoop::run() {
    epoll_event events[64];
    for (;;) {
        int timeout = -1;
        {
            std::lock_guard lock(mu_);
            if (!busy_.empty()) timeout = 0;
        }
        const int n = ::epoll_wait(epoll_fd_, events, 64, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            log(LogLevel::error, "shared queue loop: epoll_wait failed: {}", std::strerror(errno));
            return;
        }
        std::lock_guard lock(mu_);
        for (int i = 0; i < n; ++i) {
            const uint64_t tag = events[i].data.u64;
            auto* w = reinterpret_cast<QueueWorker*>(static_cast<uintptr_t>(tag & ~uint64_t{3}));
            if (w == nullptr) return;
            // An event fetched before remove() took the lock: skip it.
            if (!registered_.count(w)) continue;
            if (tag & 1) {
                w->on_inbox();
            } else if (tag & 2) {
                w->on_exec();
            } else if (w->on_kick()) {
                busy_.insert(w);
            }
            if (w->broken()) forget(w);
        }
        // The queues whose budget ran out get one more each, in turn.
        for (auto it = busy_.begin(); it != busy_.end();) {
            QueueWorker* w = *it++;  // forget() may erase it
            if (!w->step()) busy_.erase(w);
            if (w->broken()) forget(w);
        }
    }
}

}  // namespace blkrig::virtio
