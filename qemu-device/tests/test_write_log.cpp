// The crash model's write log: what a power cut leaves on the store for
// each mode, that a flush makes everything before it durable, and that the
// exported file is dm-log-writes (superblock, entries, data, marks).
#include "common/temp_dir.hpp"

#include "store/store.hpp"
#include "store/write_log.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

namespace blkrig::store {
namespace {

constexpr uint32_t kOut = 1, kDiscard = 11;

std::vector<uint8_t> filled(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

class WriteLogTest : public ::testing::Test {
protected:
    std::unique_ptr<Store> store_ = make_ram(1 << 20);

    int put(WriteLog& log, uint64_t seq, uint64_t off, const std::vector<uint8_t>& data) {
        const iovec v{const_cast<uint8_t*>(data.data()), data.size()};
        return log.change(seq, kOut, off, data.size(), [&] { return store_->write(off, std::span<const iovec>(&v, 1)); },
                          std::span<const iovec>(&v, 1));
    }
    std::vector<uint8_t> get(uint64_t off, size_t n) {
        std::vector<uint8_t> out(n);
        const iovec v{out.data(), n};
        EXPECT_EQ(store_->read(off, std::span<const iovec>(&v, 1)), 0);
        return out;
    }
    int flush(WriteLog& log, uint64_t seq) { return log.flush(seq, [&] { return store_->flush(); }); }
};

TEST_F(WriteLogTest, DropAllRestoresTheLastFlushedState) {
    WriteLog log(*store_, "");
    ASSERT_EQ(put(log, 1, 0, filled(1024, 0xaa)), 0);
    ASSERT_EQ(flush(log, 2), 0);
    ASSERT_EQ(put(log, 3, 512, filled(1024, 0xbb)), 0);  // overlaps the flushed write
    ASSERT_EQ(put(log, 4, 512, filled(512, 0xcc)), 0);   // overwrites the unflushed one
    EXPECT_EQ(log.unflushed(), 2u);
    EXPECT_EQ(log.unflushed_bytes(), 1536u);
    EXPECT_EQ(get(512, 512), filled(512, 0xcc)) << "the guest reads its own writes before a cut";
    const auto rep = log.power_cut(CutMode::drop_all, 0, 0.5);
    ASSERT_EQ(rep.dropped.size(), 2u);
    EXPECT_EQ(rep.dropped[0].seq, 3u);
    EXPECT_EQ(rep.dropped[1].seq, 4u);
    EXPECT_TRUE(rep.kept.empty());
    EXPECT_EQ(get(0, 1024), filled(1024, 0xaa));
    EXPECT_EQ(get(1024, 512), filled(512, 0)) << "the unflushed write past the flushed range is gone";
    EXPECT_EQ(log.unflushed(), 0u);
}

TEST_F(WriteLogTest, KeepAllChangesNothing) {
    WriteLog log(*store_, "");
    ASSERT_EQ(put(log, 1, 4096, filled(512, 0x11)), 0);
    const auto rep = log.power_cut(CutMode::keep_all, 0, 0.5);
    EXPECT_TRUE(rep.dropped.empty());
    ASSERT_EQ(rep.kept.size(), 1u);
    EXPECT_EQ(get(4096, 512), filled(512, 0x11));
}

TEST_F(WriteLogTest, DropRandomKeepsTheSurvivorsInArrivalOrderAndIsSeeded) {
    auto cut = [&](uint64_t seed) {
        store_ = make_ram(1 << 20);
        WriteLog log(*store_, "");
        // Writes 1..16, each to its own sector, plus later writes over sector 0.
        for (uint64_t i = 0; i < 16; ++i) EXPECT_EQ(put(log, i + 1, i * 512, filled(512, static_cast<uint8_t>(i + 1))), 0);
        auto rep = log.power_cut(CutMode::drop_random, seed, 0.5);
        for (const auto& w : rep.dropped) EXPECT_EQ(get(w.offset, 512), filled(512, 0)) << "dropped seq " << w.seq << " is on the store";
        for (const auto& w : rep.kept) EXPECT_EQ(get(w.offset, 512), filled(512, static_cast<uint8_t>(w.seq))) << "kept seq " << w.seq;
        std::vector<uint64_t> dropped;
        for (const auto& w : rep.dropped) dropped.push_back(w.seq);
        return dropped;
    };
    const auto a = cut(7), b = cut(7), c = cut(8);
    EXPECT_EQ(a, b) << "the same seed must drop the same writes";
    EXPECT_NE(a, c);
    EXPECT_GT(a.size(), 0u);
    EXPECT_LT(a.size(), 16u);
}

TEST_F(WriteLogTest, OverlappingSurvivorLandsOverADroppedWrite) {
    // seq 1 dropped, seq 2 kept, both on sector 0: the store must end with
    // seq 2's data, not seq 1's and not the old zeros.
    for (uint64_t seed = 0; seed < 64; ++seed) {
        store_ = make_ram(1 << 20);
        WriteLog log(*store_, "");
        put(log, 1, 0, filled(1024, 1));
        put(log, 2, 512, filled(512, 2));
        const auto rep = log.power_cut(CutMode::drop_random, seed, 0.5);
        if (rep.dropped.size() != 1 || rep.dropped[0].seq != 1) continue;
        EXPECT_EQ(get(0, 512), filled(512, 0));
        EXPECT_EQ(get(512, 512), filled(512, 2));
        return;
    }
    FAIL() << "no seed dropped seq 1 and kept seq 2";
}

TEST_F(WriteLogTest, ExportIsDmLogWrites) {
    TempDir dir;
    const std::string path = dir.file("log.bin");
    {
        WriteLog log(*store_, path);
        put(log, 1, 1024, filled(1024, 0x42));
        log.mark("step 1");
        flush(log, 2);
        log.change(3, kDiscard, 4096, 512, [&] { return store_->discard(4096, 512); });
    }
    std::ifstream in(path, std::ios::binary);
    const std::vector<uint8_t> raw((std::istreambuf_iterator<char>(in)), {});
    ASSERT_GE(raw.size(), 512u);
    uint64_t magic, version, nr;
    uint32_t sectorsize;
    std::memcpy(&magic, raw.data(), 8);
    std::memcpy(&version, raw.data() + 8, 8);
    std::memcpy(&nr, raw.data() + 16, 8);
    std::memcpy(&sectorsize, raw.data() + 24, 4);
    EXPECT_EQ(magic, 0x6a736677736872ull);
    EXPECT_EQ(version, 1u);
    EXPECT_EQ(nr, 4u);
    EXPECT_EQ(sectorsize, 512u);
    struct H {
        uint64_t sector, nr_sectors, flags, data_len;
    } h;
    size_t pos = 512;
    std::memcpy(&h, raw.data() + pos, sizeof h);
    EXPECT_EQ(h.sector, 2u);
    EXPECT_EQ(h.nr_sectors, 2u);
    EXPECT_EQ(h.flags, 0u);
    EXPECT_EQ(std::vector<uint8_t>(raw.begin() + pos + 512, raw.begin() + pos + 1536), filled(1024, 0x42));
    pos += 512 + 1024;
    std::memcpy(&h, raw.data() + pos, sizeof h);
    EXPECT_EQ(h.flags, 8u) << "a mark";
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(raw.data() + pos + 32), h.data_len), "step 1");
    pos += 512;
    std::memcpy(&h, raw.data() + pos, sizeof h);
    EXPECT_EQ(h.flags, 1u) << "a flush";
    EXPECT_EQ(h.nr_sectors, 0u);
    pos += 512;
    std::memcpy(&h, raw.data() + pos, sizeof h);
    EXPECT_EQ(h.flags, 4u) << "a discard, without data";
    EXPECT_EQ(h.sector, 8u);
    EXPECT_EQ(pos + 512, raw.size());
}

TEST(WriteLogErrors, UnwritableExportPathNamesIt) {
    auto store = make_ram(4096);
    try {
        WriteLog log(*store, "/nonexistent-dir/log.bin");
        FAIL() << "no error";
    } catch (const WriteLogError& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/log.bin"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace blkrig::store
