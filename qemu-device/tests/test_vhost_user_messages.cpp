// vhost_user message decoders: well-formed payloads decode; every size, fd
// or field violation throws ProtocolError naming the request.
#include "vhost_user/message.hpp"

#include <sys/eventfd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <functional>

namespace blkrig::vhost_user {
namespace {

template <typename T>
std::vector<uint8_t> bytes_of(const T& v) {
    std::vector<uint8_t> out(sizeof v);
    std::memcpy(out.data(), &v, sizeof v);
    return out;
}

Message message(uint32_t request, std::vector<uint8_t> payload, size_t nfds = 0) {
    Message m;
    m.hdr = Header{request, kVersion, static_cast<uint32_t>(payload.size())};
    m.payload = std::move(payload);
    for (size_t i = 0; i < nfds; ++i) m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
    return m;
}

// The ProtocolError text f throws; a test failure (and "") if it does not throw.
std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const ProtocolError& e) {
        return e.what();
    }
    ADD_FAILURE() << "no ProtocolError thrown";
    return {};
}

// expr must throw ProtocolError whose text contains every one of the strings.
#define EXPECT_PROTOCOL_ERROR_MENTIONS(expr, ...)                                                            \
    do {                                                                                                     \
        const std::string msg_ = error_of([&] { (void)(expr); });                                            \
        for (const char* want_ : {__VA_ARGS__})                                                              \
            EXPECT_NE(msg_.find(want_), std::string::npos) << "no \"" << want_ << "\" in \"" << msg_ << '"'; \
    } while (0)

std::vector<uint8_t> header_bytes(uint32_t request, uint32_t flags, uint32_t size) {
    std::vector<uint8_t> b(kHeaderSize);
    std::memcpy(b.data(), &request, 4);
    std::memcpy(b.data() + 4, &flags, 4);
    std::memcpy(b.data() + 8, &size, 4);
    return b;
}

std::vector<uint8_t> mem_table(uint32_t n, const std::vector<MemRegionDesc>& regions) {
    std::vector<uint8_t> p(8, 0);
    std::memcpy(p.data(), &n, 4);
    for (const auto& r : regions) {
        const auto b = bytes_of(r);
        p.insert(p.end(), b.begin(), b.end());
    }
    return p;
}

MemRegionDesc region(uint64_t gpa, uint64_t size) { return MemRegionDesc{gpa, size, 0x7f0000000000ull + gpa, 0}; }

// --- header -----------------------------------------------------------------

TEST(ParseHeader, GoodHeader) {
    const auto h = parse_header(header_bytes(SET_VRING_NUM, kVersion | kFlagNeedReply, 8));
    EXPECT_EQ(h.request, uint32_t{SET_VRING_NUM});
    EXPECT_EQ(h.flags, kVersion | kFlagNeedReply);
    EXPECT_EQ(h.size, 8u);
}

TEST(ParseHeader, MaximumPayloadIsAccepted) {
    EXPECT_EQ(parse_header(header_bytes(SET_CONFIG, kVersion, kMaxPayload)).size, kMaxPayload);
}

TEST(ParseHeader, BadVersion) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(parse_header(header_bytes(GET_FEATURES, 0, 0)), "GET_FEATURES", "version 0");
    EXPECT_PROTOCOL_ERROR_MENTIONS(parse_header(header_bytes(GET_FEATURES, 2, 0)), "GET_FEATURES", "version 2");
    EXPECT_PROTOCOL_ERROR_MENTIONS(parse_header(header_bytes(SET_OWNER, 3 | kFlagReply, 0)), "SET_OWNER", "version 3");
}

TEST(ParseHeader, PayloadTooLarge) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(parse_header(header_bytes(SET_MEM_TABLE, kVersion, kMaxPayload + 1)), "SET_MEM_TABLE", "4097");
    EXPECT_PROTOCOL_ERROR_MENTIONS(parse_header(header_bytes(SET_MEM_TABLE, kVersion, UINT32_MAX)), "SET_MEM_TABLE", "exceeds");
}

TEST(ParseHeader, WrongHeaderLength) {
    auto b = header_bytes(GET_FEATURES, kVersion, 0);
    b.pop_back();
    EXPECT_PROTOCOL_ERROR_MENTIONS(parse_header(b), "11 bytes, expected 12");
}

TEST(RequestName, KnownAndUnknown) {
    EXPECT_STREQ(request_name(SET_VRING_KICK), "SET_VRING_KICK");
    EXPECT_STREQ(request_name(GET_STATUS), "GET_STATUS");
    EXPECT_STREQ(request_name(999), "unknown");
}

// --- u64 --------------------------------------------------------------------

TEST(DecodeU64, Good) {
    EXPECT_EQ(decode_u64(message(SET_FEATURES, bytes_of(uint64_t{0x1234'5678'9abcull}))), 0x1234'5678'9abcull);
}

TEST(DecodeU64, WrongSize) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_u64(message(SET_FEATURES, bytes_of(uint32_t{1}))), "SET_FEATURES", "4 bytes");
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_u64(message(SET_PROTOCOL_FEATURES, {})), "SET_PROTOCOL_FEATURES", "0 bytes");
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_u64(message(SET_FEATURES, std::vector<uint8_t>(9))), "SET_FEATURES", "expected 8");
}

TEST(DecodeU64, UnexpectedFd) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_u64(message(SET_FEATURES, bytes_of(uint64_t{1}), 1)), "SET_FEATURES",
                                   "file descriptors");
}

// --- vring state / addr -----------------------------------------------------

TEST(DecodeVringState, Good) {
    const auto s = decode_vring_state(message(SET_VRING_NUM, bytes_of(VringState{1, 256})));
    EXPECT_EQ(s.index, 1u);
    EXPECT_EQ(s.num, 256u);
}

TEST(DecodeVringState, WrongSize) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_vring_state(message(SET_VRING_BASE, bytes_of(uint32_t{0}))), "SET_VRING_BASE",
                                   "expected 8");
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_vring_state(message(SET_VRING_NUM, std::vector<uint8_t>(16))), "SET_VRING_NUM",
                                   "16 bytes");
}

TEST(DecodeVringState, UnexpectedFd) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_vring_state(message(SET_VRING_NUM, bytes_of(VringState{0, 8}), 1)), "SET_VRING_NUM",
                                   "file descriptors");
}

TEST(DecodeVringAddr, Good) {
    const VringAddr in{2, 0, 0x1000, 0x3000, 0x2000, 0};
    const auto a = decode_vring_addr(message(SET_VRING_ADDR, bytes_of(in)));
    EXPECT_EQ(a.index, 2u);
    EXPECT_EQ(a.desc, 0x1000u);
    EXPECT_EQ(a.used, 0x3000u);
    EXPECT_EQ(a.avail, 0x2000u);
}

TEST(DecodeVringAddr, WrongSize) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_vring_addr(message(SET_VRING_ADDR, std::vector<uint8_t>(sizeof(VringAddr) - 8))),
                                   "SET_VRING_ADDR", "expected 40");
}

// --- mem table --------------------------------------------------------------

TEST(DecodeMemTable, GoodTwoRegions) {
    const auto regs = decode_mem_table(message(SET_MEM_TABLE, mem_table(2, {region(0, 0x10000), region(0x100000, 0x20000)}), 2));
    ASSERT_EQ(regs.size(), 2u);
    EXPECT_EQ(regs[1].guest_phys_addr, 0x100000u);
    EXPECT_EQ(regs[1].memory_size, 0x20000u);
    EXPECT_EQ(regs[1].userspace_addr, 0x7f0000100000u);
}

TEST(DecodeMemTable, ZeroRegions) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_mem_table(message(SET_MEM_TABLE, mem_table(0, {}))), "SET_MEM_TABLE", "0 regions");
}

TEST(DecodeMemTable, NineRegions) {
    std::vector<MemRegionDesc> r;
    for (uint64_t i = 0; i < 9; ++i) r.push_back(region(i << 20, 0x1000));
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_mem_table(message(SET_MEM_TABLE, mem_table(9, r), 9)), "SET_MEM_TABLE", "9 regions");
}

TEST(DecodeMemTable, EightRegionsAreAccepted) {
    std::vector<MemRegionDesc> r;
    for (uint64_t i = 0; i < 8; ++i) r.push_back(region(i << 20, 0x1000));
    EXPECT_EQ(decode_mem_table(message(SET_MEM_TABLE, mem_table(8, r), 8)).size(), 8u);
}

TEST(DecodeMemTable, FdCountMismatch) {
    const auto p = mem_table(2, {region(0, 0x1000), region(0x10000, 0x1000)});
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_mem_table(message(SET_MEM_TABLE, p, 1)), "SET_MEM_TABLE", "carries 1 file descriptors");
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_mem_table(message(SET_MEM_TABLE, p, 3)), "SET_MEM_TABLE", "carries 3 file descriptors");
}

TEST(DecodeMemTable, PayloadSizeDisagreesWithRegionCount) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_mem_table(message(SET_MEM_TABLE, mem_table(2, {region(0, 0x1000)}), 2)),
                                   "SET_MEM_TABLE", "expected 72");
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_mem_table(message(SET_MEM_TABLE, {1, 0, 0})), "SET_MEM_TABLE", "shorter than 8");
}

TEST(DecodeMemTable, EmptyOrWrappingRegion) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_mem_table(message(SET_MEM_TABLE, mem_table(1, {region(0, 0)}), 1)), "SET_MEM_TABLE",
                                   "empty");
    EXPECT_PROTOCOL_ERROR_MENTIONS(
        decode_mem_table(message(SET_MEM_TABLE, mem_table(1, {region(UINT64_MAX - 0xfff, 0x2000)}), 1)), "SET_MEM_TABLE",
        "wraps");
    MemRegionDesc off = region(0, 0x2000);
    off.mmap_offset = UINT64_MAX - 0xfff;
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_mem_table(message(SET_MEM_TABLE, mem_table(1, {off}), 1)), "SET_MEM_TABLE", "wraps");
}

// --- config -----------------------------------------------------------------

std::vector<uint8_t> config(uint32_t offset, uint32_t size, uint32_t flags, std::vector<uint8_t> data) {
    std::vector<uint8_t> p(12 + data.size());
    std::memcpy(p.data(), &offset, 4);
    std::memcpy(p.data() + 4, &size, 4);
    std::memcpy(p.data() + 8, &flags, 4);
    std::copy(data.begin(), data.end(), p.begin() + 12);
    return p;
}

TEST(DecodeConfig, GetConfigCarriesAnIgnoredBuffer) {
    const auto c = decode_config(message(GET_CONFIG, config(0, 8, 0, std::vector<uint8_t>(8, 0xcc))), false);
    EXPECT_EQ(c.offset, 0u);
    EXPECT_EQ(c.size, 8u);
    EXPECT_TRUE(c.data.empty());
}

TEST(DecodeConfig, SetConfigKeepsData) {
    const auto c = decode_config(message(SET_CONFIG, config(32, 1, 0, {1})), true);
    EXPECT_EQ(c.offset, 32u);
    EXPECT_EQ(c.data, (std::vector<uint8_t>{1}));
}

TEST(DecodeConfig, SizeAbove256) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_config(message(GET_CONFIG, config(0, 257, 0, std::vector<uint8_t>(257))), false),
                                   "GET_CONFIG", "257 exceeds 256");
}

TEST(DecodeConfig, PayloadDisagreesWithSize) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_config(message(SET_CONFIG, config(0, 8, 0, {1, 2})), true), "SET_CONFIG", "14 bytes");
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_config(message(GET_CONFIG, std::vector<uint8_t>(8)), false), "GET_CONFIG",
                                   "shorter than 12");
}

TEST(DecodeConfig, UnexpectedFd) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_config(message(SET_CONFIG, config(0, 1, 0, {0}), 1), true), "SET_CONFIG",
                                   "file descriptors");
}

// --- vring fds --------------------------------------------------------------

TEST(DecodeVringFd, WithFd) {
    const auto f = decode_vring_fd(message(SET_VRING_KICK, bytes_of(uint64_t{3}), 1));
    EXPECT_EQ(f.index, 3u);
    EXPECT_TRUE(f.has_fd);
}

TEST(DecodeVringFd, NoFdFlag) {
    const auto f = decode_vring_fd(message(SET_VRING_CALL, bytes_of(uint64_t{kVringNoFd | 1})));
    EXPECT_EQ(f.index, 1u);
    EXPECT_FALSE(f.has_fd);
}

TEST(DecodeVringFd, MissingFd) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_vring_fd(message(SET_VRING_KICK, bytes_of(uint64_t{0}))), "SET_VRING_KICK",
                                   "carries 0 file descriptors, expected 1");
}

TEST(DecodeVringFd, UnexpectedFd) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_vring_fd(message(SET_VRING_CALL, bytes_of(uint64_t{kVringNoFd}), 1)), "SET_VRING_CALL",
                                   "carries 1 file descriptors, expected 0");
}

TEST(DecodeVringFd, ReservedBits) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_vring_fd(message(SET_VRING_ERR, bytes_of(uint64_t{1u << 9}), 1)), "SET_VRING_ERR",
                                   "reserved");
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_vring_fd(message(SET_VRING_KICK, bytes_of(uint64_t{1ull << 63}), 1)), "SET_VRING_KICK",
                                   "reserved");
}

TEST(DecodeVringFd, WrongSize) {
    EXPECT_PROTOCOL_ERROR_MENTIONS(decode_vring_fd(message(SET_VRING_KICK, bytes_of(uint32_t{0}), 1)), "SET_VRING_KICK",
                                   "expected 8");
}

// --- replies ----------------------------------------------------------------

TEST(EncodeReply, U64ReplyLayout) {
    const auto b = encode_u64_reply(GET_FEATURES, 0x1122334455667788ull);
    ASSERT_EQ(b.size(), kHeaderSize + 8);
    const auto h = parse_header(std::span(b).first(kHeaderSize));
    EXPECT_EQ(h.request, uint32_t{GET_FEATURES});
    EXPECT_EQ(h.flags, kVersion | kFlagReply);
    EXPECT_EQ(h.size, 8u);
    uint64_t v;
    std::memcpy(&v, b.data() + kHeaderSize, 8);
    EXPECT_EQ(v, 0x1122334455667788ull);
}

TEST(EncodeReply, EmptyPayload) {
    const auto b = encode_reply(GET_CONFIG, {});
    ASSERT_EQ(b.size(), kHeaderSize);
    EXPECT_EQ(parse_header(b).size, 0u);
}

}  // namespace
}  // namespace blkrig::vhost_user
