// The crash command's pure parts: the write log read back (written by the
// device's own WriteLog), its epochs, and the states chosen from them.
#include "crash/log_writes.hpp"
#include "crash/states.hpp"
#include "common/temp_dir.hpp"
#include "store/store.hpp"
#include "store/write_log.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <tuple>

namespace blkrig::crash {
namespace {

constexpr uint32_t kOut = 1, kDiscard = 11;

struct Recorder {
    TempDir dir;
    std::unique_ptr<store::Store> store = store::make_ram(1 << 20);
    std::string path = dir.file("log.bin");
    std::unique_ptr<store::WriteLog> log = std::make_unique<store::WriteLog>(*store, path);
    uint64_t seq = 0;
    void write(uint64_t offset, uint64_t bytes, uint8_t fill) {
        std::vector<uint8_t> d(bytes, fill);
        const iovec v{d.data(), d.size()};
        log->change(++seq, kOut, offset, bytes, [&] { return store->write(offset, std::span<const iovec>(&v, 1)); }, std::span<const iovec>(&v, 1));
    }
    void discard(uint64_t offset, uint64_t bytes) {
        log->change(++seq, kDiscard, offset, bytes, [&] { return store->discard(offset, bytes); });
    }
    void flush() { log->flush(++seq, [&] { return store->flush(); }); }
    void marker(int n) { log->mark("blkrig marker " + std::to_string(n)); }
    std::vector<uint8_t> bytes() {
        log.reset();  // the final superblock
        std::ifstream in(path, std::ios::binary);
        return {std::istreambuf_iterator<char>(in), {}};
    }
};

TEST(CrashLog, ReadsWhatTheDeviceWrote) {
    Recorder r;
    r.marker(0);
    r.write(1024, 1024, 0x42);
    r.discard(8192, 512);
    r.flush();
    r.marker(1);
    const auto raw = r.bytes();
    const auto f = parse_log_writes(raw);
    EXPECT_TRUE(f.cut_short.empty()) << f.cut_short;
    ASSERT_EQ(f.entries.size(), 5u);
    EXPECT_EQ(marker_of(f.entries[0]), 0);
    EXPECT_EQ(f.entries[1].kind, LogEntry::Kind::write);
    EXPECT_EQ(f.entries[1].sector, 2u);
    EXPECT_EQ(f.entries[1].nr_sectors, 2u);
    EXPECT_EQ(raw.at(f.entries[1].data_offset), 0x42);
    EXPECT_EQ(raw.at(f.entries[1].data_offset + 1023), 0x42);
    EXPECT_EQ(f.entries[2].kind, LogEntry::Kind::discard);
    EXPECT_EQ(f.entries[2].sector, 16u);
    EXPECT_EQ(f.entries[3].kind, LogEntry::Kind::flush);
    EXPECT_EQ(marker_of(f.entries[4]), 1);
}

TEST(CrashLog, BadInputIsNamedAndACutFileKeepsWhatCameBefore) {
    Recorder r;
    r.write(0, 4096, 1);
    r.flush();
    r.write(4096, 4096, 2);
    auto raw = r.bytes();
    const auto whole = parse_log_writes(raw);
    ASSERT_EQ(whole.entries.size(), 3u);
    // Cut inside the last write's data: the first two entries stay, and it says why.
    raw.resize(raw.size() - 100);
    const auto cut = parse_log_writes(raw);
    EXPECT_EQ(cut.entries.size(), 2u);
    EXPECT_NE(cut.cut_short.find("past the end"), std::string::npos) << cut.cut_short;

    EXPECT_THROW(parse_log_writes(std::vector<uint8_t>(100, 0)), LogError);
    auto bad = raw;
    bad[0] ^= 1;
    try {
        parse_log_writes(bad);
        FAIL() << "bad magic accepted";
    } catch (const LogError& e) {
        EXPECT_NE(std::string(e.what()).find("offset 0"), std::string::npos) << e.what();
    }
    bad = raw;
    bad[512 + 16] = 0x40;  // flags of entry 0: a bit dm-log-writes does not have
    EXPECT_THROW(parse_log_writes(bad), LogError);
    bad = raw;
    bad[512 + 9] = 0x7f;  // nr_sectors of entry 0: more than the file holds
    EXPECT_FALSE(parse_log_writes(bad).cut_short.empty());
    bad[512 + 15] = 0x7f;  // more than any file could hold
    EXPECT_THROW(parse_log_writes(bad), LogError);
}

// A log by hand: the superblock's count, then entries of one header sector (and data).
std::vector<uint8_t> hand_log(uint64_t claimed, const std::vector<std::array<uint64_t, 3>>& entries) {
    auto put = [](std::vector<uint8_t>& v, size_t at, uint64_t x) { std::memcpy(v.data() + at, &x, 8); };
    std::vector<uint8_t> out(512, 0);
    put(out, 0, 0x6a736677736872ull);
    put(out, 8, 1);
    put(out, 16, claimed);
    out[24] = 0;
    out[25] = 2;  // sector size 512
    for (const auto& [sector, nr, flags] : entries) {
        std::vector<uint8_t> h(512 + 512 * nr, 0xab);
        std::fill(h.begin(), h.begin() + 512, 0);
        put(h, 0, sector);
        put(h, 8, nr);
        put(h, 16, flags);
        out.insert(out.end(), h.begin(), h.end());
    }
    return out;
}

TEST(CrashLog, TheSuperblocksCountEndsTheLogAndFuaFlushesDoNotCount) {
    constexpr uint64_t kFua = 2;
    // Two entries counted, a FUA write among them: read whole, not cut short, a flush added after the FUA write.
    auto two = parse_log_writes(hand_log(2, {{8, 1, kFua}, {16, 1, 0}}));
    EXPECT_TRUE(two.cut_short.empty()) << two.cut_short;
    EXPECT_EQ(two.entries_read, 2u);
    ASSERT_EQ(two.entries.size(), 3u);
    EXPECT_EQ(two.entries[1].kind, LogEntry::Kind::flush);
    // Three counted, two in the file: cut short, though three entries were made (the FUA's flush is not the third).
    auto cut = parse_log_writes(hand_log(3, {{8, 1, kFua}, {16, 1, 0}}));
    EXPECT_NE(cut.cut_short.find("counts 3 entries, the file holds 2"), std::string::npos) << cut.cut_short;
    // Past the count the file is stale: not read, even when it looks like entries.
    auto stale = parse_log_writes(hand_log(1, {{8, 1, 0}, {16, 1, 0}, {24, 1, 0}}));
    EXPECT_TRUE(stale.cut_short.empty()) << stale.cut_short;
    EXPECT_EQ(stale.entries.size(), 1u);
}

TEST(CrashStates, EpochsEndAtFlushesWithData) {
    Recorder r;
    r.flush();  // nothing written yet: no epoch
    r.marker(0);
    r.write(0, 512, 1);
    r.write(512, 512, 2);
    r.flush();
    r.flush();  // nothing since: no epoch
    r.marker(1);
    r.write(1024, 512, 3);
    const auto ep = epochs_of(parse_log_writes(r.bytes()));
    ASSERT_EQ(ep.size(), 2u);
    EXPECT_EQ(ep[0].writes.size(), 2u);
    EXPECT_TRUE(ep[0].flushed);
    EXPECT_EQ(ep[0].last_marker, 0);
    EXPECT_EQ(ep[0].markers, (std::vector<int64_t>{0}));
    EXPECT_EQ(ep[1].writes.size(), 1u);
    EXPECT_FALSE(ep[1].flushed);
    EXPECT_EQ(ep[1].last_marker, 1);
    EXPECT_EQ(ep[1].markers, (std::vector<int64_t>{1}));  // logged after a flush that ended no epoch: still the second's
}

std::vector<Epoch> sized(std::vector<size_t> ns) {
    std::vector<Epoch> out;
    size_t next = 0;
    for (size_t i = 0; i < ns.size(); ++i) {
        Epoch e;
        for (size_t k = 0; k < ns[i]; ++k) e.writes.push_back(next++);
        e.flushed = i + 1 < ns.size();
        out.push_back(e);
    }
    return out;
}

TEST(CrashStates, TornWritesFollowEachPrefixAtTheirFirstSectorAndHalf) {
    Recorder r;
    r.write(0, 4096, 1);   // 8 sectors: torn after 1 and after 4
    r.write(8192, 512, 2); // 1 sector: cannot tear
    r.discard(16384, 4096);  // a discard is not torn
    r.write(20480, 1024, 3); // 2 sectors: torn after 1 only (half is 1)
    const auto ep = epochs_of(parse_log_writes(r.bytes()));
    ASSERT_EQ(ep.size(), 1u);
    EXPECT_EQ(ep[0].sectors, (std::vector<uint64_t>{8, 1, 0, 2}));
    Selection sel = parse_selection("all");
    const auto plain = enumerate(ep, sel);
    sel.torn = true;
    const auto en = enumerate(ep, sel);
    std::vector<std::tuple<size_t, int64_t, uint64_t>> torn;  // (kept, torn write, sectors)
    for (const auto& s : en.states) {
        if (s.why != "torn") {
            EXPECT_EQ(s.torn_write, -1);
            continue;
        }
        // The kept ones are the prefix before the torn write.
        for (size_t k = 0; k < s.kept.size(); ++k) EXPECT_EQ(s.kept[k], k);
        torn.emplace_back(s.kept.size(), s.torn_write, s.torn_sectors);
    }
    EXPECT_EQ(torn, (std::vector<std::tuple<size_t, int64_t, uint64_t>>{{0, 0, 1}, {0, 0, 4}, {3, 3, 1}}));
    EXPECT_EQ(en.states.size(), plain.states.size() + 3);
    // Counted among the possible: (8-1) tear points of write 0 and (2-1) of write 3, each with any subset of the other three.
    EXPECT_EQ(en.total, plain.total + (7 + 1) * 8);
    // Not in "flushes": it takes no prefixes.
    sel = parse_selection("flushes");
    sel.torn = true;
    EXPECT_EQ(enumerate(ep, sel).states.size(), 1u);
}

TEST(CrashStates, FlushesAreOneStateEach) {
    const auto en = enumerate(sized({3, 2, 0}), parse_selection("flushes"));
    ASSERT_EQ(en.states.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(en.states[i].epoch, i);
        EXPECT_TRUE(en.states[i].kept.empty());
    }
    EXPECT_EQ(en.total, (8 - 1) + (4 - 1) + 1);
}

TEST(CrashStates, AllTakesEverySubsetOfASmallEpochOnce) {
    const auto en = enumerate(sized({3, 2}), parse_selection("all"));
    // Epoch 0: 8 subsets but the full one (that disk is epoch 1's empty one); epoch 1: 4.
    EXPECT_EQ(en.states.size(), 7u + 4u);
    EXPECT_EQ(en.total, 11);
    std::set<std::pair<size_t, std::vector<size_t>>> seen;
    for (const auto& s : en.states) EXPECT_TRUE(seen.insert({s.epoch, s.kept}).second) << "state listed twice";
    EXPECT_TRUE(seen.count({1, {0, 1}})) << "the final disk";
}

TEST(CrashStates, ALargeEpochGetsPrefixesAndSeededSubsetsReproducibly) {
    Selection sel = parse_selection("random:20");
    sel.seed = 7;
    const auto a = enumerate(sized({40}), sel), b = enumerate(sized({40}), sel);
    // Empty, 40 prefixes (the full one among them), 20 seeded.
    EXPECT_EQ(a.states.size(), 1u + 40u + 20u);
    ASSERT_EQ(a.states.size(), b.states.size());
    for (size_t i = 0; i < a.states.size(); ++i) EXPECT_EQ(a.states[i].kept, b.states[i].kept);
    sel.seed = 8;
    const auto c = enumerate(sized({40}), sel);
    bool differs = false;
    for (size_t i = 41; i < c.states.size(); ++i) differs |= c.states[i].kept != a.states[i].kept;
    EXPECT_TRUE(differs) << "another seed, other subsets";
    EXPECT_GT(a.total, 1e12L);
}

TEST(CrashStates, SelectionTextIsChecked) {
    EXPECT_EQ(parse_selection("random:5").n, 5u);
    for (const char* bad : {"", "some", "random:", "random:0", "random:x", "random:100001", "random:5x"})
        EXPECT_THROW(parse_selection(bad), std::invalid_argument) << bad;
}

}  // namespace
}  // namespace blkrig::crash
