#include "frontend/frontend.hpp"

#include "vhost_user/channel.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace blkrig::frontend {

using namespace vhost_user;

namespace {

constexpr uint64_t bit(int n) { return 1ull << n; }

template <typename T>
void append(std::vector<uint8_t>& out, const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

void st16(uint8_t* p, uint16_t v, std::memory_order mo = std::memory_order_relaxed) {
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(p)).store(v, mo);
}
uint16_t ld16(uint8_t* p, std::memory_order mo = std::memory_order_relaxed) {
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(p)).load(mo);
}

UniqueFd make_eventfd() {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid()) throw FrontendError(fmt::format("eventfd: {}", std::strerror(errno)));
    return fd;
}

}  // namespace

Frontend::Frontend(const Options& o) : opt_(o) {
    // Guest memory: a memfd the back end maps, as QEMU's memory-backend-memfd.
    mem_fd_.reset(::memfd_create("blkrig-frontend", MFD_CLOEXEC));
    if (!mem_fd_.valid() || ::ftruncate(mem_fd_.get(), static_cast<off_t>(o.memory_bytes)) != 0)
        throw FrontendError(fmt::format("guest memory memfd: {}", std::strerror(errno)));
    void* p = ::mmap(nullptr, o.memory_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mem_fd_.get(), 0);
    if (p == MAP_FAILED) throw FrontendError(fmt::format("mmap guest memory: {}", std::strerror(errno)));
    mem_ = static_cast<uint8_t*>(p);
    next_ = 4096;  // gpa 0 stays unused, so a zero address is always a bug

    sock_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (o.socket_path.size() >= sizeof addr.sun_path) throw FrontendError("socket path too long: " + o.socket_path);
    std::memcpy(addr.sun_path, o.socket_path.c_str(), o.socket_path.size() + 1);
    if (::connect(sock_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw FrontendError(fmt::format("cannot connect to {}: {}", o.socket_path, std::strerror(errno)));

    const uint64_t offered = request(GET_FEATURES, {}, true);
    if (!(offered & bit(kFProtocolFeatures))) throw FrontendError("back end does not offer protocol features");
    uint64_t want = bit(32) | bit(28) | bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH) |
                          bit(VIRTIO_BLK_F_MQ) | bit(VIRTIO_BLK_F_CONFIG_WCE) |
                          bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES) | (o.event_idx ? bit(29) : 0) | bit(kFProtocolFeatures);
    if (!o.indirect) want &= ~bit(28);
    acked_ = offered & want;
    const uint64_t proto_offered = request(GET_PROTOCOL_FEATURES, {}, true);
    protocol_ = proto_offered & (bit(kProtoMq) | bit(kProtoReplyAck) | bit(kProtoConfig));
    std::vector<uint8_t> pl;
    append(pl, protocol_);
    request(SET_PROTOCOL_FEATURES, pl, false);
    if (protocol_ & bit(kProtoMq)) {
        const uint64_t n = request(GET_QUEUE_NUM, {}, true);
        if (n < o.queues) throw FrontendError(fmt::format("back end has {} queues, {} wanted", n, o.queues));
    } else if (o.queues > 1) {
        throw FrontendError("back end has no MQ protocol feature");
    }
    request(SET_OWNER, {}, false);
    if (protocol_ & bit(kProtoConfig)) {
        // Ask for the fields up to write-zeroes, as QEMU does: back ends built
        // against older headers refuse larger reads.
        constexpr uint32_t kConfigLen = offsetof(virtio_blk_config, max_secure_erase_sectors);
        pl.clear();
        append(pl, uint32_t{0});
        append(pl, kConfigLen);
        append(pl, uint32_t{0});
        pl.resize(pl.size() + kConfigLen);
        send(GET_CONFIG, pl, kVersion, {});
        const auto r = recv_reply(GET_CONFIG);
        if (r.size() != 12 + kConfigLen) throw FrontendError(fmt::format("GET_CONFIG reply of {} bytes, expected {}", r.size(), 12 + kConfigLen));
        std::memcpy(&config_, r.data() + 12, kConfigLen);
    }
    pl.clear();
    append(pl, acked_);
    request(SET_FEATURES, pl, false);

    pl.clear();
    append(pl, uint32_t{1});
    append(pl, uint32_t{0});
    append(pl, MemRegionDesc{0, o.memory_bytes, reinterpret_cast<uint64_t>(mem_), 0});
    request(SET_MEM_TABLE, pl, false, {mem_fd_.get()});

    queues_.resize(o.queues);
    for (uint16_t i = 0; i < o.queues; ++i) {
        Queue& q = queues_[i];
        q.num = o.queue_size;
        const Buf d = alloc(16u * q.num, 16), a = alloc(6u + 2u * q.num, 2), u = alloc(6u + 8u * q.num, 4);
        q.desc_gpa = d.gpa, q.avail_gpa = a.gpa, q.used_gpa = u.gpa;
        q.desc = d.host, q.avail = a.host, q.used = u.host;
        for (uint16_t k = 0; k < q.num; ++k) {
            q.header_buf.push_back(alloc(16, 16));
            q.status_buf.push_back(alloc(1, 1));
        }
        q.kick = make_eventfd();
        q.call = make_eventfd();
        q.err = make_eventfd();
        start_queue(i);
    }
}

void Frontend::start_queue(uint16_t i) {
    Queue& q = queues_[i];
    std::memset(q.avail, 0, 6u + 2u * q.num);
    std::memset(q.used, 0, 6u + 8u * q.num);
    q.avail_idx = q.last_used = 0;
    q.chains.assign(q.num, {});
    q.raw_status.assign(q.num, std::nullopt);
    q.free_desc.clear();
    for (uint16_t k = 0; k < q.num; ++k) q.free_desc.push_back(static_cast<uint16_t>(q.num - 1 - k));
    auto state = [&](uint32_t num) {
        std::vector<uint8_t> b;
        append(b, VringState{i, num});
        return b;
    };
    request(SET_VRING_NUM, state(q.num), false);
    request(SET_VRING_BASE, state(0), false);
    std::vector<uint8_t> pl;
    append(pl, VringAddr{i, 0, reinterpret_cast<uint64_t>(q.desc), reinterpret_cast<uint64_t>(q.used),
                         reinterpret_cast<uint64_t>(q.avail), 0});
    request(SET_VRING_ADDR, pl, false);
    std::vector<uint8_t> idx;
    append(idx, uint64_t{i});
    request(SET_VRING_CALL, idx, false, {q.call.get()});
    request(SET_VRING_ERR, idx, false, {q.err.get()});
    request(SET_VRING_KICK, idx, false, {q.kick.get()});
    request(SET_VRING_ENABLE, state(1), false);
    q.running = true;
}

Frontend::~Frontend() {
    try {
        for (uint16_t i = 0; i < queues_.size(); ++i)
            if (queues_[i].running) stop_queue(i);
    } catch (const std::exception&) {
        // The back end may be gone already; the socket closes below either way.
    }
    sock_.reset();
    if (mem_) ::munmap(mem_, opt_.memory_bytes);
}

Frontend::Buf Frontend::alloc(uint32_t len, uint32_t align) {
    next_ = (next_ + align - 1) / align * align;
    if (next_ + len > opt_.memory_bytes) throw FrontendError("front-end guest memory exhausted");
    Buf b{next_, mem_ + next_, len};
    next_ += len;
    return b;
}

void Frontend::send(uint32_t req, const std::vector<uint8_t>& payload, uint32_t flags, const std::vector<int>& fds) {
    std::vector<uint8_t> bytes(kHeaderSize);
    const auto size = static_cast<uint32_t>(payload.size());
    std::memcpy(bytes.data(), &req, 4);
    std::memcpy(bytes.data() + 4, &flags, 4);
    std::memcpy(bytes.data() + 8, &size, 4);
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    try {
        send_with_fds(sock_.get(), bytes, fds);
    } catch (const ProtocolError& e) {
        throw FrontendError(fmt::format("sending {}: {}", request_name(req), e.what()));
    }
}

std::vector<uint8_t> Frontend::recv_reply(uint32_t req) {
    auto m = receive(sock_.get());
    if (!m) throw FrontendError(fmt::format("back end closed the connection instead of answering {}", request_name(req)));
    if (m->hdr.request != req || !(m->hdr.flags & kFlagReply))
        throw FrontendError(fmt::format("expected a reply to {}, got {} flags {:#x}", request_name(req), request_name(m->hdr.request), m->hdr.flags));
    return m->payload;
}

uint64_t Frontend::request(uint32_t req, const std::vector<uint8_t>& payload, bool want_reply, const std::vector<int>& fds) {
    const bool ack = !want_reply && (protocol_ & bit(kProtoReplyAck));
    send(req, payload, kVersion | (ack ? kFlagNeedReply : 0), fds);
    if (!want_reply && !ack) return 0;
    const auto r = recv_reply(req);
    if (r.size() != 8) throw FrontendError(fmt::format("reply to {} is {} bytes", request_name(req), r.size()));
    uint64_t v;
    std::memcpy(&v, r.data(), 8);
    if (ack && v != 0) throw FrontendError(fmt::format("back end refused {} (ack {})", request_name(req), v));
    return v;
}

std::optional<uint32_t> Frontend::submit(uint16_t qi, uint32_t type, uint64_t sector, const std::vector<Buf>& data) {
    Queue& q = queues_.at(qi);
    const size_t need = data.size() + 2;
    if (q.free_desc.size() < need) return std::nullopt;
    std::vector<uint16_t> ids(need);
    for (auto& id : ids) {
        id = q.free_desc.back();
        q.free_desc.pop_back();
    }
    const uint16_t head = ids[0];
    q.chains[head] = ids;
    const Buf hdr = q.header_buf[head], st = q.status_buf[head];
    virtio_blk_outhdr h{};
    h.type = type;
    h.sector = sector;
    std::memcpy(hdr.host, &h, sizeof h);
    *st.host = 0xff;
    const bool device_writes = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
    auto put = [&](size_t i, uint64_t gpa, uint32_t len, uint16_t flags) {
        uint8_t* d = q.desc + 16u * ids[i];
        const uint16_t next = i + 1 < ids.size() ? ids[i + 1] : 0;
        std::memcpy(d, &gpa, 8);
        std::memcpy(d + 8, &len, 4);
        std::memcpy(d + 12, &flags, 2);
        std::memcpy(d + 14, &next, 2);
    };
    put(0, hdr.gpa, 16, 1);
    for (size_t i = 0; i < data.size(); ++i) put(i + 1, data[i].gpa, data[i].len, static_cast<uint16_t>(1 | (device_writes ? 2 : 0)));
    put(need - 1, st.gpa, 1, 2);
    st16(q.avail + 4 + 2u * (q.avail_idx % q.num), head);
    ++q.avail_idx;
    st16(q.avail + 2, q.avail_idx, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(q.kick.get(), &one, sizeof one);
    return head;
}

std::vector<Completed> Frontend::wait(std::chrono::milliseconds timeout) {
    std::vector<Completed> out;
    std::vector<pollfd> fds;
    for (auto& q : queues_) fds.push_back({q.call.get(), POLLIN, 0});
    // Until something completes or the time is up: a call signalled for a
    // completion an earlier wait already took wakes the poll with nothing
    // new, and must not end the wait early.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        for (uint16_t i = 0; i < queues_.size(); ++i) {
            Queue& q = queues_[i];
            uint64_t v;
            [[maybe_unused]] auto n = ::read(q.call.get(), &v, sizeof v);
            const uint16_t used = ld16(q.used + 2, std::memory_order_acquire);
            while (q.last_used != used) {
                const uint8_t* e = q.used + 4 + 8u * (q.last_used % q.num);
                uint32_t id, len;
                std::memcpy(&id, e, 4);
                std::memcpy(&len, e + 4, 4);
                ++q.last_used;
                if (id >= q.num || q.chains[id].empty()) throw FrontendError(fmt::format("queue {}: back end returned unknown head {}", i, id));
                const Buf st = q.raw_status[id] ? *q.raw_status[id] : q.status_buf[id];
                q.raw_status[id].reset();
                out.push_back({i, id, *st.host, len});
                for (auto d : q.chains[id]) q.free_desc.push_back(d);
                q.chains[id].clear();
            }
            if (opt_.event_idx) st16(q.avail + 4 + 2u * q.num, q.last_used);  // used_event
        }
        if (!out.empty()) break;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) break;
        if (::poll(fds.data(), fds.size(), static_cast<int>(left)) < 0 && errno != EINTR) break;
    }
    return out;
}

uint8_t Frontend::sync(uint16_t q, uint32_t type, uint64_t sector, const std::vector<Buf>& data) {
    const auto tag = submit(q, type, sector, data);
    if (!tag) throw FrontendError("ring full");
    for (int i = 0; i < 100; ++i) {
        for (const auto& c : wait(std::chrono::milliseconds(100)))
            if (c.queue == q && c.tag == *tag) return c.status;
    }
    throw FrontendError(fmt::format("queue {}: request {} did not complete in 10 s", q, *tag));
}

uint8_t Frontend::read(uint64_t sector, Buf buf, uint16_t q) { return sync(q, VIRTIO_BLK_T_IN, sector, {buf}); }
uint8_t Frontend::write(uint64_t sector, Buf buf, uint16_t q) { return sync(q, VIRTIO_BLK_T_OUT, sector, {buf}); }
uint8_t Frontend::flush(uint16_t q) { return sync(q, VIRTIO_BLK_T_FLUSH, 0, {}); }

uint16_t Frontend::stop_queue(uint16_t qi) {
    std::vector<uint8_t> pl;
    append(pl, VringState{qi, 0});
    send(GET_VRING_BASE, pl, kVersion, {});
    const auto r = recv_reply(GET_VRING_BASE);
    if (r.size() != sizeof(VringState)) throw FrontendError("GET_VRING_BASE reply size");
    VringState s;
    std::memcpy(&s, r.data(), sizeof s);
    queues_.at(qi).running = false;
    return static_cast<uint16_t>(s.num);
}

uint16_t Frontend::in_flight(uint16_t qi) const {
    const Queue& q = queues_.at(qi);
    return static_cast<uint16_t>(q.avail_idx - q.last_used);
}

std::vector<uint16_t> Frontend::take_slots(uint16_t qi, size_t n) {
    Queue& q = queues_.at(qi);
    if (q.free_desc.size() < n) throw FrontendError(fmt::format("queue {}: {} descriptor slots wanted, {} free", qi, n, q.free_desc.size()));
    std::vector<uint16_t> ids(n);
    for (auto& id : ids) {
        id = q.free_desc.back();
        q.free_desc.pop_back();
    }
    return ids;
}

void Frontend::write_desc(uint16_t qi, uint16_t slot, const Desc& d) {
    Queue& q = queues_.at(qi);
    if (slot >= q.num) throw FrontendError(fmt::format("queue {}: descriptor slot {} of {}", qi, slot, q.num));
    uint8_t* p = q.desc + 16u * slot;
    std::memcpy(p, &d.addr, 8);
    std::memcpy(p + 8, &d.len, 4);
    std::memcpy(p + 12, &d.flags, 2);
    std::memcpy(p + 14, &d.next, 2);
}

Frontend::Buf Frontend::indirect_table(const std::vector<Desc>& descs) {
    const Buf t = alloc(static_cast<uint32_t>(16 * descs.size()), 16);
    for (size_t i = 0; i < descs.size(); ++i) {
        uint8_t* p = t.host + 16 * i;
        std::memcpy(p, &descs[i].addr, 8);
        std::memcpy(p + 8, &descs[i].len, 4);
        std::memcpy(p + 12, &descs[i].flags, 2);
        std::memcpy(p + 14, &descs[i].next, 2);
    }
    return t;
}

void Frontend::publish(uint16_t qi, uint16_t head, std::vector<uint16_t> slots, std::optional<Buf> status) {
    Queue& q = queues_.at(qi);
    if (head < q.num && !slots.empty()) {
        q.chains[head] = std::move(slots);
        q.raw_status[head] = status;
    }
    st16(q.avail + 4 + 2u * (q.avail_idx % q.num), head);
    ++q.avail_idx;
    st16(q.avail + 2, q.avail_idx, std::memory_order_release);
}

void Frontend::set_avail_idx(uint16_t qi, uint16_t idx) {
    Queue& q = queues_.at(qi);
    q.avail_idx = idx;
    st16(q.avail + 2, idx, std::memory_order_release);
}

void Frontend::kick(uint16_t qi) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(queues_.at(qi).kick.get(), &one, sizeof one);
}

bool Frontend::wait_error(uint16_t qi, std::chrono::milliseconds timeout) {
    pollfd p{queues_.at(qi).err.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
    uint64_t v;
    return ::read(p.fd, &v, sizeof v) == sizeof v;
}

uint16_t Frontend::reset_queue(uint16_t qi) {
    const uint16_t base = queues_.at(qi).running ? stop_queue(qi) : 0;
    start_queue(qi);
    return base;
}

}  // namespace blkrig::frontend
