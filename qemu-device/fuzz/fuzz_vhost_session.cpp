// Fuzzes a whole vhost-user session: the input is a sequence of front-end
// messages sent over a real socket, with real file descriptors (a memfd of
// guest memory, eventfds), received by the channel and handled by one
// Session in order, as Session::serve would; between them the front end
// may kick a queue or write guest memory, so started queues run requests
// on a RAM-backed device. A session may end with ProtocolError (the
// connection is then closed); any other exception or a crash is a bug.
// Every reply must be a well-formed reply to the message just sent.
//
// Input, repeated until it runs out:
//   op u8, flags u8, fds u8, then per op:
//     a request:  len u8, payload[len]            (structured for mem tables and ring addresses)
//     raw:        request u32, len u16, payload
//     kick:       (none): a write to every kick eventfd sent so far
//     poke:       offset u16, len u8, bytes: guest memory written by the "guest"
//     cut:        header only, size larger than what follows, then EOF
#include "blk/device.hpp"
#include "common/log.hpp"
#include "store/store.hpp"
#include "vhost_user/channel.hpp"
#include "vhost_user/session.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

using namespace blkrig;
using namespace blkrig::vhost_user;

namespace {

constexpr size_t kMemSize = 64 * 1024;   // the guest memory memfd
constexpr uint64_t kGpa = 0x100000;      // where the structured mem table puts it
constexpr uint64_t kUva = 0x7f0000000000;  // and the front end's address of it

class Input {
public:
    Input(const uint8_t* d, size_t n) : d_(d), n_(n) {}
    bool empty() const { return i_ >= n_; }
    template <typename T>
    T take() {
        T v{};
        const size_t k = std::min(sizeof v, n_ - i_);
        std::memcpy(&v, d_ + i_, k);
        i_ += k;
        return v;
    }
    std::vector<uint8_t> bytes(size_t k) {
        k = std::min(k, n_ - i_);
        std::vector<uint8_t> out(d_ + i_, d_ + i_ + k);
        i_ += k;
        return out;
    }

private:
    const uint8_t* d_;
    size_t n_;
    size_t i_ = 0;
};

const uint32_t kRequests[] = {GET_FEATURES,   SET_FEATURES,     SET_OWNER,     RESET_OWNER,    SET_MEM_TABLE,
                              SET_VRING_NUM,  SET_VRING_ADDR,   SET_VRING_BASE, GET_VRING_BASE, SET_VRING_KICK,
                              SET_VRING_CALL, SET_VRING_ERR,    GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
                              SET_VRING_ENABLE, GET_CONFIG,     SET_CONFIG,    GET_INFLIGHT_FD, SET_INFLIGHT_FD,
                              SET_LOG_BASE,   RESET_DEVICE,     GET_MAX_MEM_SLOTS, SET_STATUS,  GET_STATUS};
constexpr size_t kNumRequests = sizeof kRequests / sizeof kRequests[0];
enum PseudoOp : size_t { kRaw = kNumRequests, kKick, kPoke, kCut, kNumOps };

template <typename T>
void put(std::vector<uint8_t>& out, const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

// A front end that gets the layout right, so the fuzzer reaches started
// queues: a mem table of the memfd, ring addresses inside it.
std::vector<uint8_t> structured_payload(uint32_t request, Input& in) {
    std::vector<uint8_t> p;
    if (request == SET_MEM_TABLE) {
        const uint32_t n = 1 + in.take<uint8_t>() % 2;
        put(p, n);
        put(p, uint32_t{0});
        for (uint32_t i = 0; i < n; ++i) {
            // Two halves of the memfd, or (odd byte) all of it once.
            const uint8_t b = in.take<uint8_t>();
            const uint64_t half = n == 2 ? kMemSize / 2 : kMemSize;
            const uint64_t off = i * half;
            MemRegionDesc r{kGpa + off, b & 1 ? half - 4096 * (b >> 5) : half, kUva + off, off};
            if (r.memory_size == 0) r.memory_size = 4096;
            if ((b & 6) == 6) r.memory_size += kMemSize;  // a front end that claims more than the fd holds
            put(p, r);
        }
    } else {
        VringAddr a{};
        a.index = in.take<uint8_t>() % 3;
        a.desc = kUva + (in.take<uint16_t>() % kMemSize & ~15ull);
        a.avail = kUva + (in.take<uint16_t>() % kMemSize & ~1ull);
        a.used = kUva + (in.take<uint16_t>() % kMemSize & ~3ull);
        put(p, a);
    }
    return p;
}

void send_message(int sock, uint32_t request, uint32_t flags, uint32_t size, std::span<const uint8_t> payload, const std::vector<int>& fds) {
    std::vector<uint8_t> bytes(kHeaderSize);
    std::memcpy(bytes.data(), &request, 4);
    std::memcpy(bytes.data() + 4, &flags, 4);
    std::memcpy(bytes.data() + 8, &size, 4);
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    vhost_user::send_with_fds(sock, bytes, fds);  // a socketpair with room for it: a failure is a bug (uncaught: the fuzzer reports it)
}

// Reads every reply the session sent; each must be a reply to `request`.
void check_replies(int sock, uint32_t request) {
    static std::vector<uint8_t> buf(1 << 16);  // not zeroed per message: that was most of the time
    size_t have = 0;
    for (;;) {
        const ssize_t r = ::recv(sock, buf.data() + have, buf.size() - have, MSG_DONTWAIT);
        if (r <= 0) break;
        have += static_cast<size_t>(r);
    }
    size_t at = 0;
    while (at < have) {
        if (have - at < kHeaderSize) std::abort();  // a reply cut short
        uint32_t req, flags, size;
        std::memcpy(&req, buf.data() + at, 4);
        std::memcpy(&flags, buf.data() + at + 4, 4);
        std::memcpy(&size, buf.data() + at + 8, 4);
        if (req != request || flags != (kVersion | kFlagReply) || size > kMaxPayload || have - at - kHeaderSize < size) std::abort();
        at += kHeaderSize + size;
    }
}

}  // namespace

// The device's log would be most of the time spent (format strings are
// checked when compiled, so nothing is lost by not writing it);
// BLKRIG_FUZZ_LOG=1 keeps it, to see what a crashing input did.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (!std::getenv("BLKRIG_FUZZ_LOG")) log_threshold() = static_cast<int>(LogLevel::error) + 1;
    else log_threshold() = static_cast<int>(LogLevel::debug);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Input in(data, size);
    // One device for the process, as blkrig-device serves one session after
    // another (a device per input would spend the time starting threads).
    static auto store = store::make_ram(2048 * 512);
    static blk::BlkDevice dev(
        [] {
            blk::Geometry g;
            g.capacity_sectors = 2048;
            g.marker_sectors = 64;
            g.num_queues = 2;
            g.queue_size = 256;
            return g;
        }(),
        *store, nullptr);

    // Guest memory too; zeroed for each input.
    static const int mem = [] {
        const int fd = ::memfd_create("guest", MFD_CLOEXEC);
        if (fd < 0 || ::ftruncate(fd, kMemSize) != 0) std::abort();
        return fd;
    }();
    static auto* const guest = [] {
        auto* p = static_cast<uint8_t*>(::mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE, MAP_SHARED, mem, 0));
        if (p == MAP_FAILED) std::abort();
        return p;
    }();
    std::memset(guest, 0, kMemSize);
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    const int front = sv[0], back = sv[1];
    std::vector<int> owned;  // eventfds the front end made (it keeps its copies)
    {
        Session session(dev, UniqueFd(back));
        while (!in.empty()) {
            const size_t op = in.take<uint8_t>() % kNumOps;
            if (op == kKick) {
                for (int fd : owned) {
                    const uint64_t one = 1;
                    [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
                }
                continue;
            }
            if (op == kPoke) {
                const size_t off = in.take<uint16_t>() % kMemSize;
                const auto b = in.bytes(in.take<uint8_t>());
                if (!b.empty()) std::memcpy(guest + off, b.data(), std::min(b.size(), kMemSize - off));
                continue;
            }
            const uint8_t fl = in.take<uint8_t>();
            // Mostly version 1; sometimes a bad version, reply bits at random.
            const uint32_t flags = (fl & 0x80 ? fl & 3 : kVersion) | (fl & (kFlagReply | kFlagNeedReply));
            const uint8_t fdspec = in.take<uint8_t>();
            std::vector<int> fds;
            for (size_t i = 0; i < (fdspec & 3u); ++i) {
                switch ((fdspec >> (2 + 2 * i)) & 3u) {
                case 0: fds.push_back(mem); break;
                case 1:
                case 2: {
                    const int e = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                    owned.push_back(e);
                    fds.push_back(e);
                    break;
                }
                default: fds.push_back(::open("/dev/null", O_RDWR | O_CLOEXEC)); owned.push_back(fds.back()); break;
                }
            }
            uint32_t request;
            std::vector<uint8_t> payload;
            if (op == kRaw) {
                request = in.take<uint32_t>();
                payload = in.bytes(in.take<uint16_t>() % (kMaxPayload + 1));
            } else if (op == kCut) {
                request = kRequests[in.take<uint8_t>() % kNumRequests];
                payload = in.bytes(in.take<uint8_t>());
            } else {
                request = kRequests[op];
                const uint8_t len = in.take<uint8_t>();
                // An odd length byte for these asks for a well-formed layout.
                if ((request == SET_MEM_TABLE || request == SET_VRING_ADDR) && (len & 1)) payload = structured_payload(request, in);
                else payload = in.bytes(len);
            }
            const auto declared = static_cast<uint32_t>(payload.size() + (op == kCut ? 1 + payload.size() : 0));
            send_message(front, request, flags, declared, payload, fds);
            if (op == kCut) ::shutdown(front, SHUT_WR);
            try {
                auto m = receive(back);
                if (!m) break;
                session.handle(*m);
            } catch (const ProtocolError&) {
                break;  // Session::serve closes the connection here
            }
            check_replies(front, request);
        }
    }  // the session stops its queues and lets go of the memory
    for (int fd : owned) ::close(fd);
    ::close(front);
    return 0;
}
