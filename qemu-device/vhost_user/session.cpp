#include "vhost_user/session.hpp"

#include "common/log.hpp"
#include "vhost_user/channel.hpp"

#include "virtio/inflight.hpp"

#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace blkrig::vhost_user {

namespace {

constexpr uint64_t bit(int n) { return 1ull << n; }

void expect_empty(const Message& m) {
    if (!m.payload.empty() || !m.fds.empty())
        throw ProtocolError(fmt::format("{}: expected no payload and no fds, got {} bytes and {} fds", request_name(m.hdr.request),
                                        m.payload.size(), m.fds.size()));
}

// Guest memory whose regions this process mapped; unmapped when the last
// queue thread and the session let go of it.
struct MappedMemory : virtio::GuestMemory {
    struct Map {
        void* addr;
        size_t len;
    };
    MappedMemory(std::vector<virtio::Region> regions, std::vector<Map> maps)
        : virtio::GuestMemory(std::move(regions)), maps_(std::move(maps)) {}
    ~MappedMemory() {
        for (const auto& m : maps_) ::munmap(m.addr, m.len);
    }
    std::vector<Map> maps_;
};

}  // namespace

uint64_t offered_protocol_features() {
    return bit(kProtoMq) | bit(kProtoReplyAck) | bit(kProtoConfig) | bit(kProtoInflightShmfd);
}

Session::InflightRegion::~InflightRegion() {
    if (addr) ::munmap(addr, len);
}

Session::Session(virtio::Device& dev, UniqueFd conn, virtio::QueueOptions queues)
    : dev_(dev), conn_(std::move(conn)), queues_(queues), vrings_(dev.max_queues()) {
    dev_.note(trace::EventCode::session_start, 0, "front end connected");
}

Session::~Session() {
    reset();
    dev_.note(trace::EventCode::session_end, 0, "front end disconnected");
}

bool Session::protocol_negotiated() const { return (acked_features_ & bit(kFProtocolFeatures)) != 0; }

void Session::reset() {
    for (auto& v : vrings_) {
        stop_ring(v);
        v = Vring{};
    }
    mem_.reset();
    inflight_.reset();
    acked_features_ = 0;
    acked_protocol_ = 0;
    features_set_ = false;
}

bool Session::serve(int stop_fd) {
    pollfd fds[2] = {{conn_.get(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
    for (;;) {
        const int r = ::poll(fds, stop_fd >= 0 ? 2 : 1, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            log(LogLevel::error, "poll on the front-end connection: {}", std::strerror(errno));
            failed_ = true;
            return false;
        }
        if (stop_fd >= 0 && fds[1].revents) return true;
        try {
            auto m = receive(conn_.get());
            if (!m) {
                log(LogLevel::info, "front end closed the connection");
                return false;
            }
            ++messages_;
            handle(*m);
        } catch (const ProtocolError& e) {
            log(LogLevel::error, "vhost-user: {}; closing the connection", e.what());
            failed_ = true;
            return false;
        }
    }
}

void Session::reply(uint32_t request, std::span<const uint8_t> payload) { send_bytes(conn_.get(), encode_reply(request, payload)); }

void Session::handle(Message& m) {
    log(LogLevel::debug, "vhost-user: {} size {} fds {}", request_name(m.hdr.request), m.hdr.size, m.fds.size());
    const bool ok = dispatch(m);
    const bool has_reply = m.hdr.request == GET_FEATURES || m.hdr.request == GET_PROTOCOL_FEATURES ||
                           m.hdr.request == GET_VRING_BASE || m.hdr.request == GET_QUEUE_NUM || m.hdr.request == GET_CONFIG ||
                           m.hdr.request == GET_INFLIGHT_FD;
    if (!has_reply && (m.hdr.flags & kFlagNeedReply) && (acked_protocol_ & bit(kProtoReplyAck)))
        send_bytes(conn_.get(), encode_u64_reply(m.hdr.request, ok ? 0 : 1));
    else if (!ok)
        log(LogLevel::warn, "vhost-user: {} failed (no reply was requested)", request_name(m.hdr.request));
}

Session::Vring& Session::vring(uint32_t index, const Message& m) {
    if (index >= vrings_.size())
        throw ProtocolError(fmt::format("{}: queue index {} but the device has {} queues", request_name(m.hdr.request), index,
                                        vrings_.size()));
    return vrings_[index];
}

void Session::stop_ring(Vring& v) {
    if (v.worker) {
        v.base = v.worker->stop();
        v.worker.reset();
        const auto index = static_cast<uint16_t>(&v - vrings_.data());
        dev_.note(trace::EventCode::queue_stopped, index, fmt::format("queue {} stopped at avail index {}", index, v.base));
    }
}

void Session::maybe_start(uint32_t index) {
    Vring& v = vrings_[index];
    if (v.worker || !v.kick.valid() || !v.addr_set || v.num == 0 || !mem_ || !features_set_) return;
    if (protocol_negotiated() && !v.enabled) return;
    if (const char* what = virtio::used_ring_overlap(v.addr.desc, v.addr.avail, v.addr.used, v.num)) {
        dev_.queue_broken(static_cast<uint16_t>(index), 0,
                          fmt::format("the used ring at {:#x} (size {}) overlaps the {} (desc {:#x} avail {:#x})", v.addr.used, v.num,
                                      what, v.addr.desc, v.addr.avail));
        return;
    }
    virtio::RingAddrs a;
    a.desc = reinterpret_cast<virtio::RawDesc*>(mem_->map_user(v.addr.desc, virtio::desc_table_bytes(v.num)));
    a.avail = mem_->map_user(v.addr.avail, virtio::avail_ring_bytes(v.num));
    a.used = mem_->map_user(v.addr.used, virtio::used_ring_bytes(v.num));
    if (!a.desc || !a.avail || !a.used) {
        const std::string why = fmt::format("ring addresses desc {:#x} avail {:#x} used {:#x} (size {}) are outside the memory table",
                                            v.addr.desc, v.addr.avail, v.addr.used, v.num);
        dev_.queue_broken(static_cast<uint16_t>(index), 0, why);
        return;
    }
    virtio::QueueSetup s;
    s.index = static_cast<uint16_t>(index);
    s.addrs = a;
    s.num = v.num;
    s.last_avail = v.base;
    s.event_idx = (acked_features_ & bit(virtio::kFEventIdx)) != 0;
    s.indirect = (acked_features_ & bit(virtio::kFIndirectDesc)) != 0;
    s.kick_fd = v.kick.get();
    s.call_fd = v.call.get();
    s.err_fd = v.err.get();
    s.poll_max_ns = queues_.poll_max_ns;
    if (inflight_ && index < inflight_->num_queues) {
        if (v.num <= inflight_->queue_size) {
            s.inflight = inflight_->addr + virtio::inflight_queue_bytes(inflight_->queue_size) * index;
            s.inflight_keep = inflight_;
        } else {
            log(LogLevel::warn, "queue {}: size {} exceeds the inflight region's {}; its requests are not tracked", index, v.num,
                inflight_->queue_size);
        }
    }
    v.worker = std::make_unique<virtio::QueueWorker>(s, mem_, dev_, queues_.loop);
    dev_.note(trace::EventCode::queue_started, s.index,
              fmt::format("queue {} started: size {}, avail index {}, event_idx {}, indirect {}", index, v.num, v.base, s.event_idx,
                          s.indirect));
}

bool Session::dispatch(Message& m) {
    switch (m.hdr.request) {
    case GET_FEATURES:
        expect_empty(m);
        send_bytes(conn_.get(), encode_u64_reply(GET_FEATURES, dev_.features() | bit(kFProtocolFeatures)));
        return true;
    case SET_FEATURES: {
        const uint64_t f = decode_u64(m);
        const uint64_t offered = dev_.features() | bit(kFProtocolFeatures);
        if (f & ~offered) {
            log(LogLevel::error, "vhost-user: SET_FEATURES {:#x} has bits {:#x} that were not offered", f, f & ~offered);
            return false;
        }
        acked_features_ = f;
        features_set_ = true;
        log(LogLevel::info, "front end acked features {:#x} (offered {:#x})", f, offered);
        dev_.set_features(f & ~bit(kFProtocolFeatures));
        for (uint32_t i = 0; i < vrings_.size(); ++i) maybe_start(i);
        return true;
    }
    case GET_PROTOCOL_FEATURES:
        expect_empty(m);
        send_bytes(conn_.get(), encode_u64_reply(GET_PROTOCOL_FEATURES, offered_protocol_features()));
        return true;
    case SET_PROTOCOL_FEATURES: {
        const uint64_t f = decode_u64(m);
        if (f & ~offered_protocol_features()) {
            log(LogLevel::error, "vhost-user: SET_PROTOCOL_FEATURES {:#x} has bits {:#x} that were not offered", f,
                f & ~offered_protocol_features());
            return false;
        }
        acked_protocol_ = f;
        return true;
    }
    case SET_OWNER:
        expect_empty(m);
        return true;
    case RESET_OWNER:
        expect_empty(m);
        reset();
        return true;
    case GET_QUEUE_NUM:
        expect_empty(m);
        send_bytes(conn_.get(), encode_u64_reply(GET_QUEUE_NUM, dev_.max_queues()));
        return true;
    case SET_MEM_TABLE: {
        auto regions = decode_mem_table(m);
        std::vector<virtio::Region> mapped;
        std::vector<MappedMemory::Map> maps;
        for (size_t i = 0; i < regions.size(); ++i) {
            const auto& r = regions[i];
            const size_t len = r.memory_size + r.mmap_offset;
            // A mapping past the end of a file maps, but touching it is
            // SIGBUS in a queue thread: refuse a region the file does not hold.
            struct stat st{};
            if (::fstat(m.fds[i].get(), &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < len) {
                for (const auto& mm : maps) ::munmap(mm.addr, mm.len);
                log(LogLevel::error, "vhost-user: SET_MEM_TABLE region {} (gpa {:#x} size {:#x} offset {:#x}) ends past its file's {} bytes", i,
                    r.guest_phys_addr, r.memory_size, r.mmap_offset, st.st_size);
                return false;
            }
            void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, m.fds[i].get(), 0);
            if (p == MAP_FAILED) {
                const int e = errno;
                for (const auto& mm : maps) ::munmap(mm.addr, mm.len);
                log(LogLevel::error, "vhost-user: SET_MEM_TABLE region {} (gpa {:#x} size {:#x}): mmap failed: {}", i,
                    r.guest_phys_addr, r.memory_size, std::strerror(e));
                return false;
            }
            maps.push_back({p, len});
            mapped.push_back({r.guest_phys_addr, r.memory_size, r.userspace_addr, static_cast<uint8_t*>(p) + r.mmap_offset});
            log(LogLevel::debug, "region {}: gpa {:#x} size {:#x} uva {:#x}", i, r.guest_phys_addr, r.memory_size, r.userspace_addr);
        }
        // Queue threads hold the old table; stop them before it goes away.
        for (auto& v : vrings_) stop_ring(v);
        mem_ = std::make_shared<MappedMemory>(std::move(mapped), std::move(maps));
        for (uint32_t i = 0; i < vrings_.size(); ++i) maybe_start(i);
        return true;
    }
    case SET_VRING_NUM: {
        const auto s = decode_vring_state(m);
        Vring& v = vring(s.index, m);
        if (s.num == 0 || s.num > dev_.max_queue_size() || (s.num & (s.num - 1)) != 0) {
            log(LogLevel::error, "vhost-user: queue {} size {} is not a power of two up to {}", s.index, s.num, dev_.max_queue_size());
            return false;
        }
        if (v.worker) {
            log(LogLevel::error, "vhost-user: SET_VRING_NUM on running queue {}", s.index);
            return false;
        }
        v.num = static_cast<uint16_t>(s.num);
        return true;
    }
    case SET_VRING_ADDR: {
        const auto a = decode_vring_addr(m);
        Vring& v = vring(a.index, m);
        stop_ring(v);
        v.addr = a;
        v.addr_set = true;
        maybe_start(a.index);
        return true;
    }
    case SET_VRING_BASE: {
        const auto s = decode_vring_state(m);
        Vring& v = vring(s.index, m);
        if (v.worker) {
            log(LogLevel::error, "vhost-user: SET_VRING_BASE on running queue {}", s.index);
            return false;
        }
        v.base = static_cast<uint16_t>(s.num);
        return true;
    }
    case GET_VRING_BASE: {
        const auto s = decode_vring_state(m);
        Vring& v = vring(s.index, m);
        stop_ring(v);
        // The ring is stopped until the next SET_VRING_KICK.
        v.kick.reset();
        VringState out{s.index, v.base};
        reply(GET_VRING_BASE, std::span(reinterpret_cast<const uint8_t*>(&out), sizeof out));
        return true;
    }
    case SET_VRING_KICK:
    case SET_VRING_CALL:
    case SET_VRING_ERR: {
        const auto f = decode_vring_fd(m);
        Vring& v = vring(f.index, m);
        if (!f.has_fd && m.hdr.request == SET_VRING_KICK) {
            log(LogLevel::error, "vhost-user: queue {}: polling without a kick fd is not supported", f.index);
            return false;
        }
        stop_ring(v);  // the thread borrows these fds
        UniqueFd fd = f.has_fd ? std::move(m.fds[0]) : UniqueFd{};
        (m.hdr.request == SET_VRING_KICK ? v.kick : m.hdr.request == SET_VRING_CALL ? v.call : v.err) = std::move(fd);
        maybe_start(f.index);
        return true;
    }
    case SET_VRING_ENABLE: {
        const auto s = decode_vring_state(m);
        Vring& v = vring(s.index, m);
        if (s.num > 1) {
            log(LogLevel::error, "vhost-user: SET_VRING_ENABLE queue {} with value {}", s.index, s.num);
            return false;
        }
        v.enabled = s.num == 1;
        if (v.enabled) maybe_start(s.index);
        else stop_ring(v);
        return true;
    }
    case GET_INFLIGHT_FD:
        return get_inflight_fd(m);
    case SET_INFLIGHT_FD:
        return set_inflight_fd(m);
    case GET_CONFIG: {
        const auto c = decode_config(m, false);
        const auto cfg = dev_.read_config();
        ConfigPayload out = c;
        std::vector<uint8_t> payload(12 + c.size, 0);
        if (c.offset > cfg.size() || c.size > cfg.size() - c.offset) {
            // An empty reply tells the front end the read failed.
            log(LogLevel::error, "vhost-user: GET_CONFIG offset {} size {} beyond the {}-byte config space", c.offset, c.size, cfg.size());
            reply(GET_CONFIG, {});
            return false;
        }
        std::memcpy(payload.data(), &out.offset, 4);
        std::memcpy(payload.data() + 4, &out.size, 4);
        std::memcpy(payload.data() + 8, &out.flags, 4);
        std::memcpy(payload.data() + 12, cfg.data() + c.offset, c.size);
        reply(GET_CONFIG, payload);
        return true;
    }
    case SET_CONFIG: {
        const auto c = decode_config(m, true);
        if (!dev_.write_config(c.offset, c.data)) {
            log(LogLevel::warn, "vhost-user: SET_CONFIG offset {} size {} is not a writable field", c.offset, c.size);
            return false;
        }
        return true;
    }
    default:
        break;
    }
    throw ProtocolError(fmt::format("{} ({}) is not supported by this back end", request_name(m.hdr.request), m.hdr.request));
}

// The front end asks for a region once per device (QEMU: at the first start
// and after a reset), keeps it, and hands it to every back end it connects
// to (SET_INFLIGHT_FD); it outlives this process.
bool Session::get_inflight_fd(const Message& m) {
    const auto want = decode_inflight(m);
    if (want.num_queues == 0 || want.queue_size == 0 || want.queue_size > 32768) {
        log(LogLevel::error, "vhost-user: GET_INFLIGHT_FD for {} queues of size {}", want.num_queues, want.queue_size);
        reply(GET_INFLIGHT_FD, encode_inflight({}));
        return false;
    }
    InflightInfo out = want;
    out.mmap_offset = 0;
    out.mmap_size = virtio::inflight_queue_bytes(want.queue_size) * want.num_queues;
    UniqueFd fd(::memfd_create("blkrig-inflight", MFD_CLOEXEC));
    if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(out.mmap_size)) != 0) {
        log(LogLevel::error, "vhost-user: GET_INFLIGHT_FD: a {}-byte memfd: {}", out.mmap_size, std::strerror(errno));
        reply(GET_INFLIGHT_FD, encode_inflight({}));  // mmap_size 0: no region
        return false;
    }
    // ftruncate zero-fills: every queue's version is 0, "fresh".
    const auto payload = encode_inflight(out);
    send_with_fd(conn_.get(), encode_reply(GET_INFLIGHT_FD, payload), fd.get());
    log(LogLevel::info, "inflight region: {} bytes for {} queue(s) of size {}", out.mmap_size, out.num_queues, out.queue_size);
    return true;
}

bool Session::set_inflight_fd(Message& m) {
    const auto d = decode_inflight(m);
    const size_t need = virtio::inflight_queue_bytes(d.queue_size) * d.num_queues;
    if (d.num_queues == 0 || d.queue_size == 0 || d.queue_size > 32768 || d.mmap_size < need) {
        log(LogLevel::error, "vhost-user: SET_INFLIGHT_FD: {} bytes for {} queues of size {} (needs {})", d.mmap_size, d.num_queues,
            d.queue_size, need);
        return false;
    }
    // A file shorter than the region would fault (SIGBUS) on the first access.
    struct stat st {};
    if (::fstat(m.fds[0].get(), &st) != 0 || st.st_size < 0 || d.mmap_offset > static_cast<uint64_t>(st.st_size) ||
        static_cast<uint64_t>(st.st_size) - d.mmap_offset < need) {
        log(LogLevel::error, "vhost-user: SET_INFLIGHT_FD: the file holds {} bytes, the region needs {} at offset {}", st.st_size, need,
            d.mmap_offset);
        return false;
    }
    void* p = ::mmap(nullptr, d.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, m.fds[0].get(), static_cast<off_t>(d.mmap_offset));
    if (p == MAP_FAILED) {
        log(LogLevel::error, "vhost-user: SET_INFLIGHT_FD: mmap of {} bytes at offset {}: {}", d.mmap_size, d.mmap_offset,
            std::strerror(errno));
        return false;
    }
    auto region = std::make_shared<InflightRegion>();
    region->addr = static_cast<uint8_t*>(p);
    region->len = d.mmap_size;
    region->num_queues = std::min<uint16_t>(d.num_queues, static_cast<uint16_t>(vrings_.size()));
    region->queue_size = d.queue_size;
    // Queue threads borrow the old region; the new one applies as they restart.
    for (auto& v : vrings_) stop_ring(v);
    inflight_ = std::move(region);
    // Requests in flight keep their seqs; new ones are numbered past them,
    // before any queue takes a new request.
    if (const int64_t top = virtio::inflight_max_seq(inflight_->addr, inflight_->num_queues, inflight_->queue_size); top >= 0)
        dev_.seq_at_least(static_cast<uint64_t>(top) + 1);
    log(LogLevel::info, "inflight region set: {} queue(s) of size {}", inflight_->num_queues, inflight_->queue_size);
    for (uint32_t i = 0; i < vrings_.size(); ++i) maybe_start(i);
    return true;
}

}  // namespace blkrig::vhost_user
