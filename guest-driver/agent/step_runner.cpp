#include "step_runner.hpp"
#include "common/markers.hpp"

#include "process.hpp"

#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

namespace blkrig::agent {

namespace {

constexpr std::chrono::seconds kReapGrace{2};
constexpr char kGo = 'g';

// One message: the result line, with the descriptor an open step made.
void send_result(int sock, const std::string& line, int fd) {
    size_t pos = 0;
    while (pos < line.size()) {
        iovec iov{const_cast<char*>(line.data() + pos), line.size() - pos};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
        if (pos == 0 && fd >= 0) {
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
        }
        const ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return;  // the parent gave up on this step
        pos += static_cast<size_t>(n);
    }
}

// Reads the child's message until EOF or the deadline. False on timeout.
bool receive_result(int sock, Clock::time_point deadline, std::string& line, UniqueFd& passed) {
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{sock, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
        char buf[4096];
        iovec iov{buf, sizeof buf};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return true;
        line.append(buf, static_cast<size_t>(n));
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int fd = -1;
                std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
                passed.reset(fd);
            }
        }
    }
}

}  // namespace

size_t StepRunner::run_all() {
    size_t sent = 0;
    for (size_t i = 0; i < spec_.steps.size(); ++i) {
        bool timed_out = false;
        const StepResult r = run_one(i, timed_out);
        rep_.step(r, spec_.steps[i]);
        ++sent;
        if (timed_out) {
            rep_.note("step " + std::to_string(i) + " timed out after " + std::to_string(spec_.step_timeout_s) +
                      " s; the remaining steps are not run");
            break;
        }
    }
    return sent;
}

StepResult StepRunner::run_one(size_t index, bool& timed_out) {
    const Step& step = spec_.steps[index];
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw SysError("socketpair", "for a step", errno);
    UniqueFd ours(sv[0]), theirs(sv[1]);
    const int64_t t_fork = monotonic_ns();
    const auto deadline = Clock::now() + std::chrono::seconds(spec_.step_timeout_s);
    const pid_t pid = ::fork();
    if (pid < 0) throw SysError("fork", "a step", errno);
    if (pid == 0) {
        ours.reset();
        child(index, theirs.get());
    }
    theirs.reset();  // so the child's exit is EOF here

    if (step.op == Op::close) {
        // The child's close must drop the last reference for its result to
        // mean anything; it waits for this.
        fds_.erase(step.fd);
        ::send(ours.get(), &kGo, 1, MSG_NOSIGNAL);
    }

    std::string line;
    UniqueFd passed;
    StepResult r;
    r.index = index;
    r.op = step.op;
    if (!receive_result(ours.get(), deadline, line, passed)) {
        kill_child(pid, kReapGrace);
        timed_out = true;
        r.fail_text("timeout");
        r.t_start_ns = t_fork;
        r.t_end_ns = monotonic_ns();
        return r;
    }
    const auto status = wait_until(pid, Clock::now() + kReapGrace);
    if (!status) kill_child(pid, kReapGrace);
    if (auto decoded = decode_step(line)) {
        r = std::move(*decoded);
        if (step.op == Op::open && r.ret == 0) {
            if (passed.valid()) {
                fds_[step.fd] = std::move(passed);
            } else {
                r.fail_text("the opened descriptor did not reach PID 1");
            }
        }
        return r;
    }
    r.fail_text("the step's process ended without a result (" +
                (status ? describe_status(*status) : std::string("it did not exit")) + ")");
    r.t_start_ns = t_fork;
    r.t_end_ns = monotonic_ns();
    return r;
}

void StepRunner::child(size_t index, int sock) {
    const Step& step = spec_.steps[index];
    StepResult r;
    r.index = index;
    r.op = step.op;
    if (step.op == Op::close) {
        char go = 0;
        while (::read(sock, &go, 1) < 0 && errno == EINTR) {
        }
    }
    // Pinned before the opening marker, so the step's requests (readahead
    // runs in the reader's context) come from that CPU and its queue.
    bool pinned = true;
    if (step.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(step.cpu, &set);
        if (::sched_setaffinity(0, sizeof set, &set) != 0) {
            r.fail("sched_setaffinity", errno);
            pinned = false;
        }
    }
    std::string marker_error;
    r.marker_begin = read_marker(markers::before_step(index), marker_error);
    int made_fd = -1;
    r.t_start_ns = monotonic_ns();
    try {
        if (pinned) made_fd = run_op(step, spec_, fds_, r);
    } catch (const std::exception& e) {
        r.fail_text(e.what());
    }
    r.t_end_ns = monotonic_ns();
    r.marker_end = read_marker(markers::after_step(index), marker_error);
    r.marker_error = marker_error;
    send_result(sock, encode(r), made_fd);
    ::_exit(0);
}

int64_t StepRunner::read_marker(uint64_t index, std::string& error) const {
    if (!spec_.marker) return -1;
    const Marker& m = *spec_.marker;
    AlignedBuffer buf(m.block_size);
    const uint64_t offset = m.byte_offset(index);
    auto fail = [&](const std::string& why) {
        error += (error.empty() ? "" : "; ") + ("marker " + std::to_string(index) + " at byte " + std::to_string(offset) +
                                                ": " + why);
        return int64_t{-1};
    };
    ssize_t n;
    do n = ::pread(disk_fd_, buf.data(), m.block_size, static_cast<off_t>(offset));
    while (n < 0 && errno == EINTR);
    if (n < 0) return fail("pread: " + errno_name(errno));
    if (n == 0) return fail("past the end of the disk (blkrig-device needs --marker-sectors)");
    if (static_cast<size_t>(n) != m.block_size) return fail("short read of " + std::to_string(n) + " bytes");
    const std::string want = m.expected_text(index);
    if (std::memcmp(buf.data(), want.data(), want.size()) != 0)
        return fail("no marker text there (marker.first_sector must be the image size in sectors, and the device needs "
                    "--marker-sectors)");
    return static_cast<int64_t>(index);
}

}  // namespace blkrig::agent
