// Stores: file round trips (buffered and O_DIRECT through the bounce path),
// the snapshot overlay never touching its base, and zeroing.
#include "common/temp_dir.hpp"

#include "store/store.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

namespace blkrig::store {
namespace {

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 31 + i / 509);
    return v;
}

std::vector<uint8_t> slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spit(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

int write_at(Store& s, uint64_t off, const std::vector<uint8_t>& bytes) {
    const iovec v{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    return s.write(off, std::span(&v, 1));
}

std::vector<uint8_t> read_at(Store& s, uint64_t off, size_t len) {
    std::vector<uint8_t> out(len, 0xcd);
    const iovec v{out.data(), len};
    EXPECT_EQ(s.read(off, std::span(&v, 1)), 0);
    return out;
}

// Splits buf into iovecs of the given lengths (the last takes the rest).
std::vector<iovec> split(std::vector<uint8_t>& buf, std::initializer_list<size_t> lens) {
    std::vector<iovec> out;
    size_t off = 0;
    for (size_t l : lens) {
        out.push_back({buf.data() + off, l});
        off += l;
    }
    if (off < buf.size()) out.push_back({buf.data() + off, buf.size() - off});
    return out;
}

constexpr size_t kImage = 1 << 20;

class FileStoreTest : public ::testing::Test {
protected:
    FileStoreTest() { spit(path_, std::vector<uint8_t>(kImage, 0)); }
    // The image opened with O_DIRECT, or null with why_ set where this
    // filesystem has no O_DIRECT (the test then skips).
    std::unique_ptr<Store> open_direct() {
        try {
            return open_file(path_, false, true);
        } catch (const StoreError& e) {
            why_ = e.what();
            return nullptr;
        }
    }
    TempDir dir_;
    std::string path_ = dir_.file("disk.img");
    std::string why_;
};

TEST_F(FileStoreTest, RoundTripWithScatteredBuffers) {
    auto s = open_file(path_, false, false);
    EXPECT_EQ(s->size(), kImage);
    auto data = pattern(12288, 1);
    const auto iov = split(data, {512, 4096, 100});
    ASSERT_EQ(s->write(4096, iov), 0);
    ASSERT_EQ(s->flush(), 0);

    std::vector<uint8_t> back(12288, 0);
    const auto riov = split(back, {3000, 1});
    ASSERT_EQ(s->read(4096, riov), 0);
    EXPECT_TRUE(back == data);

    const auto file = slurp(path_);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), file.begin() + 4096)) << "the bytes are in the file";
    EXPECT_TRUE(std::all_of(file.begin(), file.begin() + 4096, [](uint8_t b) { return b == 0; }));
}

TEST_F(FileStoreTest, DirectIoRoundTripThroughBounceBuffer) {
    auto s = open_direct();
    if (!s) GTEST_SKIP() << "O_DIRECT not available here: " << why_;
    // Unaligned offset, length and buffer: read-modify-write of whole blocks.
    const auto around = pattern(8192, 7);
    ASSERT_EQ(write_at(*s, 0, around), 0);
    auto data = pattern(1000, 9);
    ASSERT_EQ(write_at(*s, 1500, data), 0);
    auto want = around;
    std::copy(data.begin(), data.end(), want.begin() + 1500);
    EXPECT_TRUE(read_at(*s, 0, 8192) == want);
    EXPECT_TRUE(read_at(*s, 1500, 1000) == data);
}

TEST_F(FileStoreTest, DirectWriteToLastSectorKeepsImageSize) {
    // 1 MiB + 512: the last sector sits in a 4 KiB block that runs past the
    // end of the file, and the bounce buffer writes that whole block.
    constexpr size_t kOdd = kImage + 512;
    spit(path_, std::vector<uint8_t>(kOdd, 0));
    auto s = open_direct();
    if (!s) GTEST_SKIP() << "O_DIRECT not available here: " << why_;
    const auto data = pattern(512, 21);
    ASSERT_EQ(write_at(*s, kImage, data), 0);
    EXPECT_EQ(std::filesystem::file_size(path_), kOdd) << "the image grew";
    EXPECT_TRUE(read_at(*s, kImage, 512) == data);
}

TEST_F(FileStoreTest, ZeroingAndDiscard) {
    auto s = open_file(path_, false, false);
    ASSERT_EQ(write_at(*s, 0, pattern(65536, 3)), 0);
    ASSERT_EQ(s->write_zeroes(4096, 8192), 0);
    ASSERT_EQ(s->discard(32768, 4096), 0);
    auto want = pattern(65536, 3);
    std::fill(want.begin() + 4096, want.begin() + 12288, 0);
    std::fill(want.begin() + 32768, want.begin() + 36864, 0);
    EXPECT_TRUE(read_at(*s, 0, 65536) == want);
    EXPECT_EQ(s->size(), kImage) << "zeroing keeps the size";
}

TEST_F(FileStoreTest, ReadOnlyStoreRefusesWrites) {
    auto s = open_file(path_, true, false);
    EXPECT_LT(write_at(*s, 0, pattern(512, 1)), 0);
    EXPECT_TRUE(slurp(path_) == std::vector<uint8_t>(kImage, 0));
}

TEST_F(FileStoreTest, MissingImageNamesThePath) {
    try {
        open_file(dir_.file("absent.img"), false, false);
        FAIL() << "no StoreError";
    } catch (const StoreError& e) {
        EXPECT_NE(std::string(e.what()).find("absent.img"), std::string::npos) << e.what();
    }
}

TEST_F(FileStoreTest, DirectoryIsNotAnImage) { EXPECT_THROW(open_file(dir_.file(""), true, false), StoreError); }

// The io_uring engine: what it writes reads back through the synchronous
// path and the reverse, a transfer cut short at the end of the file is
// finished (zeros past it), a full queue and an O_DIRECT buffer it cannot use
// are refused so the caller runs them itself, and reap(wait) leaves nothing
// in flight.
std::unique_ptr<AsyncQueue> uring(Store& s, unsigned depth) {
    std::string why;
    auto q = s.async_queue(depth, &why);
    if (!q) ADD_FAILURE() << "no io_uring here: " << why;
    return q;
}

std::map<uint64_t, int> reap_all(AsyncQueue& q) {
    std::map<uint64_t, int> got;
    q.reap([&](uint64_t tag, int r) { got[tag] = r; }, true);
    return got;
}

TEST_F(FileStoreTest, UringRoundTripsWithTheSyncPath) {
    auto s = open_file(path_, false, false);
    auto q = uring(*s, 8);
    ASSERT_TRUE(q);
    auto data = pattern(12288, 3);
    const auto iov = split(data, {512, 4096, 100});
    ASSERT_TRUE(q->write(8192, iov, 7));
    ASSERT_TRUE(q->flush(8));
    q->submit();
    EXPECT_EQ(q->in_flight(), 2u);
    EXPECT_EQ(reap_all(*q), (std::map<uint64_t, int>{{7, 0}, {8, 0}}));
    EXPECT_EQ(q->in_flight(), 0u);
    EXPECT_TRUE(read_at(*s, 8192, 12288) == data) << "the engine's write is in the file";

    const auto other = pattern(4096, 5);
    ASSERT_EQ(write_at(*s, 65536, other), 0);
    std::vector<uint8_t> back(4096, 0);
    const auto riov = split(back, {1000});
    ASSERT_TRUE(q->read(65536, riov, 9));
    EXPECT_EQ(reap_all(*q), (std::map<uint64_t, int>{{9, 0}}));
    EXPECT_TRUE(back == other);
}

TEST_F(FileStoreTest, UringFinishesAReadCutShortByTheEndOfTheFile) {
    auto s = open_file(path_, false, false);
    auto q = uring(*s, 4);
    ASSERT_TRUE(q);
    std::vector<uint8_t> back(8192, 0xcd);
    const iovec v{back.data(), back.size()};
    ASSERT_TRUE(q->read(kImage - 4096, std::span(&v, 1), 1));
    EXPECT_EQ(reap_all(*q), (std::map<uint64_t, int>{{1, 0}}));
    EXPECT_TRUE(std::all_of(back.begin(), back.end(), [](uint8_t b) { return b == 0; })) << "past the end reads as zeros";
}

TEST_F(FileStoreTest, UringRefusesWhatItCannotTake) {
    auto s = open_file(path_, false, false);
    auto q = uring(*s, 2);
    ASSERT_TRUE(q);
    std::vector<uint8_t> buf(4096);
    const iovec v{buf.data(), buf.size()};
    EXPECT_TRUE(q->read(0, std::span(&v, 1), 1));
    EXPECT_TRUE(q->read(4096, std::span(&v, 1), 2));
    EXPECT_FALSE(q->read(8192, std::span(&v, 1), 3)) << "a third request on a depth-2 queue";
    EXPECT_EQ(reap_all(*q).size(), 2u);
    EXPECT_TRUE(q->read(8192, std::span(&v, 1), 3)) << "room again once reaped";
    EXPECT_EQ(reap_all(*q).size(), 1u);

    auto d = open_direct();
    if (!d) GTEST_SKIP() << "O_DIRECT not available here: " << why_;
    auto dq = uring(*d, 4);
    ASSERT_TRUE(dq);
    const iovec odd{buf.data() + 1, 512};
    EXPECT_FALSE(dq->read(0, std::span(&odd, 1), 4)) << "O_DIRECT with an unaligned buffer goes to the bounce path";
    EXPECT_EQ(dq->in_flight(), 0u);
}

// Without O_DIRECT a cached transfer finishes inside read()/write(); one the
// page cache does not hold goes to the ring. Both give the same bytes.
TEST_F(FileStoreTest, UringReadsWhatThePageCacheDoesNotHold) {
    auto s = open_file(path_, false, false);
    const auto data = pattern(16384, 9);
    ASSERT_EQ(write_at(*s, 32768, data), 0);
    ASSERT_EQ(s->flush(), 0);
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);  // evicts the clean pages
    ::close(fd);
    auto q = uring(*s, 4);
    ASSERT_TRUE(q);
    std::vector<uint8_t> back(16384, 0);
    const auto iov = split(back, {4096, 512, 7000});
    ASSERT_TRUE(q->read(32768, iov, 1));
    EXPECT_EQ(reap_all(*q), (std::map<uint64_t, int>{{1, 0}}));
    EXPECT_TRUE(back == data);

    // Read once, the bytes are cached: a non-blocking copy moves them all.
    std::vector<uint8_t> again(16384, 0);
    const auto iov2 = split(again, {16384});
    EXPECT_EQ(q->try_cached(false, 32768, iov2), 16384u);
    EXPECT_EQ(q->in_flight(), 0u);
    EXPECT_TRUE(again == data);
    const auto more = pattern(4096, 13);
    std::vector<uint8_t> w = more;
    const auto wiov = split(w, {4096});
    const size_t wrote = q->try_cached(true, 49152, wiov);
    if (wrote == 4096) {
        EXPECT_TRUE(read_at(*s, 49152, 4096) == more);
    } else {
        EXPECT_EQ(wrote, 0u) << "a buffered write without RWF_NOWAIT support moves nothing";
    }
}

// Where buffered writes have no RWF_NOWAIT (try_cached found out), the
// queue leaves them to the caller's synchronous write: io_uring would give
// each to a kernel worker thread. Reads and flushes still queue.
TEST_F(FileStoreTest, UringLeavesBufferedWritesWithoutNowaitToTheCaller) {
    auto s = open_file(path_, false, false);
    auto q = uring(*s, 4);
    ASSERT_TRUE(q);
    std::vector<uint8_t> w = pattern(4096, 21);
    const auto wiov = split(w, {4096});
    if (q->try_cached(true, 0, wiov) == 4096) GTEST_SKIP() << "this file system writes with RWF_NOWAIT";
    EXPECT_FALSE(q->write(0, wiov, 1)) << "a buffered write without RWF_NOWAIT went to the ring";
    std::vector<uint8_t> back(4096);
    const auto riov = split(back, {4096});
    EXPECT_TRUE(q->read(0, riov, 2));
    EXPECT_TRUE(q->flush(3));
    EXPECT_EQ(reap_all(*q), (std::map<uint64_t, int>{{2, 0}, {3, 0}}));

    auto d = open_direct();
    if (!d) GTEST_SKIP() << "O_DIRECT not available here: " << why_;
    auto dq = uring(*d, 4);
    ASSERT_TRUE(dq);
    std::unique_ptr<void, decltype(&std::free)> ab(std::aligned_alloc(4096, 4096), &std::free);
    const iovec aligned{ab.get(), 4096};
    EXPECT_EQ(dq->try_cached(true, 0, std::span(&aligned, 1)), 0u);
    EXPECT_TRUE(dq->write(0, std::span(&aligned, 1), 4)) << "O_DIRECT writes still go to the ring";
    EXPECT_EQ(reap_all(*dq), (std::map<uint64_t, int>{{4, 0}}));
}

TEST_F(FileStoreTest, UringRoundTripsWithODirect) {
    auto d = open_direct();
    if (!d) GTEST_SKIP() << "O_DIRECT not available here: " << why_;
    auto q = uring(*d, 4);
    ASSERT_TRUE(q);
    std::vector<uint8_t> plain(4096);
    const auto piov = split(plain, {4096});
    EXPECT_EQ(q->try_cached(false, 0, piov), 0u) << "O_DIRECT has no page cache to try";
    void* raw = std::aligned_alloc(4096, 8192);
    std::unique_ptr<void, decltype(&std::free)> buf(raw, &std::free);
    auto* p = static_cast<uint8_t*>(raw);
    const auto data = pattern(8192, 11);
    std::memcpy(p, data.data(), data.size());
    const iovec v{p, 8192};
    ASSERT_TRUE(q->write(4096 * 5, std::span(&v, 1), 1));
    EXPECT_EQ(reap_all(*q), (std::map<uint64_t, int>{{1, 0}}));
    std::memset(p, 0, 8192);
    ASSERT_TRUE(q->read(4096 * 5, std::span(&v, 1), 2));
    EXPECT_EQ(reap_all(*q), (std::map<uint64_t, int>{{2, 0}}));
    EXPECT_EQ(std::memcmp(p, data.data(), data.size()), 0);
}

// The device sleeps on fd() and reaps when it is readable: every completion
// must make it so, also those the kernel finishes outside the submit call
// in the submitting thread's task work (O_DIRECT, a page-cache miss).
bool readable_within(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

TEST_F(FileStoreTest, UringWakesItsFdForEveryCompletion) {
    auto d = open_direct();
    if (!d) GTEST_SKIP() << "O_DIRECT not available here: " << why_;
    auto q = uring(*d, 4);
    ASSERT_TRUE(q);
    void* raw = std::aligned_alloc(4096, 4096);
    std::unique_ptr<void, decltype(&std::free)> buf(raw, &std::free);
    const iovec v{raw, 4096};
    ASSERT_TRUE(q->read(8192, std::span(&v, 1), 1));
    q->submit();
    EXPECT_TRUE(readable_within(q->fd(), 5000)) << "an O_DIRECT read completed and nothing woke the queue";
    std::map<uint64_t, int> got;
    q->reap([&](uint64_t tag, int r) { got[tag] = r; }, false);
    EXPECT_EQ(got, (std::map<uint64_t, int>{{1, 0}}));

    // Buffered, the pages evicted: the read goes to the ring, and must wake it too.
    auto s = open_file(path_, false, false);
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    ::close(fd);
    auto bq = uring(*s, 4);
    ASSERT_TRUE(bq);
    std::vector<uint8_t> back(4096);
    const iovec bv{back.data(), back.size()};
    ASSERT_TRUE(bq->read(65536, std::span(&bv, 1), 2));
    bq->submit();
    if (bq->in_flight()) {
        EXPECT_TRUE(readable_within(bq->fd(), 5000)) << "a read the page cache did not hold completed and nothing woke the queue";
        got.clear();
        bq->reap([&](uint64_t tag, int r) { got[tag] = r; }, false);
        EXPECT_EQ(got, (std::map<uint64_t, int>{{2, 0}}));
    }
}

// An image on tmpfs is served synchronously (io_uring would hand every
// transfer to a kernel worker: bench/trace-cost); one on a disk's file
// system keeps the engine.
TEST(FileStoreEngine, AnImageInMemoryPrefersTheSynchronousPath) {
    if (!std::filesystem::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm here";
    TempDir shm("blkrig-unit-", "/dev/shm");
    const std::string img = shm.file("disk.img");
    spit(img, std::vector<uint8_t>(kImage, 0));
    auto s = open_file(img, false, false);
    EXPECT_NE(s->sync_is_better().find("tmpfs"), std::string::npos) << s->sync_is_better();
}

TEST_F(FileStoreTest, AnImageOnADiskKeepsTheEngine) {
    struct statfs sf {};
    ASSERT_EQ(::statfs(path_.c_str(), &sf), 0);
    if (sf.f_type == TMPFS_MAGIC) GTEST_SKIP() << "the temporary directory is on tmpfs here";
    auto s = open_file(path_, false, false);
    EXPECT_EQ(s->sync_is_better(), "");
}

TEST(RamStoreAsync, HasNoEngineAndSaysSo) {
    auto s = make_ram(1 << 20);
    std::string why;
    EXPECT_EQ(s->async_queue(8, &why), nullptr);
    EXPECT_NE(why.find("no asynchronous engine"), std::string::npos) << why;
}

class OverlayTest : public ::testing::Test {
protected:
    OverlayTest() : base_bytes_(pattern(kBaseSize, 42)) {
        spit(path_, base_bytes_);
        overlay_ = make_overlay(open_file(path_, true, false));
    }
    // Not a multiple of 4 KiB, so the last chunk is partial.
    static constexpr size_t kBaseSize = 40960 + 1536;

    TempDir dir_;
    std::string path_ = dir_.file("base.img");
    std::vector<uint8_t> base_bytes_;
    std::unique_ptr<Store> overlay_;
};

TEST_F(OverlayTest, ReadsFallThroughToBase) {
    EXPECT_EQ(overlay_->size(), kBaseSize);
    EXPECT_TRUE(read_at(*overlay_, 0, kBaseSize) == base_bytes_);
}

TEST_F(OverlayTest, WritesReadBackAndLeaveBaseUnchanged) {
    auto want = base_bytes_;
    auto put = [&](uint64_t off, const std::vector<uint8_t>& bytes) {
        ASSERT_EQ(write_at(*overlay_, off, bytes), 0);
        std::copy(bytes.begin(), bytes.end(), want.begin() + static_cast<std::ptrdiff_t>(off));
    };
    put(8192, pattern(4096, 1));            // one whole chunk
    put(100, pattern(200, 2));              // inside a chunk
    put(4096 - 50, pattern(100, 3));        // across a chunk boundary, partial on both sides
    put(16384 + 10, pattern(9000, 4));      // partial, whole, partial
    put(kBaseSize - 700, pattern(700, 5));  // the partial last chunk
    put(150, pattern(10, 6));               // again into an already copied chunk

    EXPECT_TRUE(read_at(*overlay_, 0, kBaseSize) == want);
    // Reads that start and end inside chunks see the merge too.
    EXPECT_TRUE(read_at(*overlay_, 4000, 300) == std::vector<uint8_t>(want.begin() + 4000, want.begin() + 4300));
    EXPECT_TRUE(slurp(path_) == base_bytes_) << "the base image was modified";
}

TEST_F(OverlayTest, ScatteredReadOverMixedChunks) {
    ASSERT_EQ(write_at(*overlay_, 5000, pattern(3000, 8)), 0);
    auto want = base_bytes_;
    const auto w = pattern(3000, 8);
    std::copy(w.begin(), w.end(), want.begin() + 5000);
    std::vector<uint8_t> got(12288);
    const auto iov = split(got, {1, 4095, 2048});
    ASSERT_EQ(overlay_->read(0, iov), 0);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin()));
}

TEST_F(OverlayTest, WriteZeroesAndDiscardStayInTheOverlay) {
    ASSERT_EQ(overlay_->write_zeroes(1000, 5000), 0);
    ASSERT_EQ(overlay_->discard(20480, 4096), 0);
    auto want = base_bytes_;
    std::fill(want.begin() + 1000, want.begin() + 6000, 0);
    std::fill(want.begin() + 20480, want.begin() + 24576, 0);
    EXPECT_TRUE(read_at(*overlay_, 0, kBaseSize) == want);
    EXPECT_TRUE(slurp(path_) == base_bytes_);
}

TEST(RamStore, StartsZeroedAndRoundTrips) {
    auto s = make_ram(1 << 20);
    EXPECT_EQ(s->size(), 1u << 20);
    EXPECT_TRUE(read_at(*s, 0, 8192) == std::vector<uint8_t>(8192, 0));
    auto data = pattern(6000, 11);
    const auto iov = split(data, {1000, 2000});
    ASSERT_EQ(s->write(777, iov), 0);
    EXPECT_TRUE(read_at(*s, 777, 6000) == data);
}

TEST(RamStore, WriteZeroesZeroesOnlyTheRange) {
    auto s = make_ram(1 << 20);
    ASSERT_EQ(write_at(*s, 0, pattern(16384, 12)), 0);
    ASSERT_EQ(s->write_zeroes(1024, 4096), 0);
    ASSERT_EQ(s->discard(10000, 10), 0);
    auto want = pattern(16384, 12);
    std::fill(want.begin() + 1024, want.begin() + 5120, 0);
    std::fill(want.begin() + 10000, want.begin() + 10010, 0);
    EXPECT_TRUE(read_at(*s, 0, 16384) == want);
}

}  // namespace
}  // namespace blkrig::store
