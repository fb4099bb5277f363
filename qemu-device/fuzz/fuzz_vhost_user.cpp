// Fuzzes the vhost-user message decoders: arbitrary header and payload bytes,
// with an fd count taken from the input. A decoder may throw ProtocolError;
// anything else (a crash, another exception) is a bug.
#include "vhost_user/message.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

using namespace blkrig;
using namespace blkrig::vhost_user;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < kHeaderSize + 1) return 0;
    Message m;
    try {
        m.hdr = parse_header(std::span(data, kHeaderSize));
    } catch (const ProtocolError&) {
        return 0;
    }
    const size_t nfds = data[kHeaderSize] % (kMaxFds + 1);
    m.payload.assign(data + kHeaderSize + 1, data + size);
    for (size_t i = 0; i < nfds; ++i) m.fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    try {
        switch (m.hdr.request % 6) {
        case 0: (void)decode_u64(m); break;
        case 1: (void)decode_vring_state(m); break;
        case 2: (void)decode_vring_addr(m); break;
        case 3: (void)decode_mem_table(m); break;
        case 4: (void)decode_config(m, (m.hdr.flags & 4) != 0); break;
        case 5: (void)decode_vring_fd(m); break;
        }
    } catch (const ProtocolError&) {
    }
    return 0;
}
