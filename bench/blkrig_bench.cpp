// blkrig-bench: random I/O from our vhost-user front end against any
// vhost-user-blk back end (blkrig-device, qemu-storage-daemon), no guest.
// Prints one JSON object: requests, IOPS, MB/s, latency percentiles.
#include "frontend/frontend.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <random>

using namespace blkrig;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
    CLI::App app{"blkrig-bench: random I/O against a vhost-user-blk back end"};
    frontend::Options o;
    std::string op = "read";
    unsigned depth = 8, seconds = 5, bs = 4096, seed = 1;
    app.add_option("--socket", o.socket_path, "back end's vhost-user socket")->required();
    app.add_option("--queues", o.queues, "virtqueues (one thread drives them all)")->check(CLI::Range(1, 16));
    app.add_option("--depth", depth, "requests in flight per queue")->check(CLI::Range(1, 64));
    app.add_option("--bs", bs, "bytes per request")->check(CLI::Range(512, 1 << 20));
    app.add_option("--op", op, "read or write")->check(CLI::IsMember({"read", "write"}));
    app.add_option("--seconds", seconds, "run time")->check(CLI::Range(1, 600));
    app.add_option("--seed", seed, "offsets are drawn from this seed");
    CLI11_PARSE(app, argc, argv);
    if (bs % 512) {
        std::cerr << "blkrig-bench: --bs must be a multiple of 512\n";
        return 2;
    }
    try {
        o.memory_bytes = std::max<size_t>(64u << 20, size_t{o.queues} * depth * bs * 2 + (16u << 20));
        frontend::Frontend fe(o);
        const uint64_t blocks = fe.capacity_sectors() * 512 / bs;
        if (blocks == 0) throw frontend::FrontendError("disk smaller than one request");
        std::mt19937_64 rng(seed);
        std::uniform_int_distribution<uint64_t> pick(0, blocks - 1);
        const uint32_t type = op == "read" ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
        std::vector<std::vector<frontend::Frontend::Buf>> bufs(o.queues);
        std::vector<std::vector<Clock::time_point>> started(o.queues, std::vector<Clock::time_point>(o.queue_size));
        for (auto& v : bufs)
            for (unsigned i = 0; i < depth; ++i) v.push_back(fe.alloc(bs));
        std::vector<double> lat_us;
        uint64_t errors = 0;
        auto issue = [&](uint16_t q, unsigned slot) {
            const auto tag = fe.submit(q, type, pick(rng) * bs / 512, {bufs[q][slot]});
            if (!tag) throw frontend::FrontendError("ring full");
            started[q][*tag] = Clock::now();
            return *tag;
        };
        // tag -> buffer slot, per queue
        std::vector<std::vector<unsigned>> slot_of(o.queues, std::vector<unsigned>(o.queue_size));
        for (uint16_t q = 0; q < o.queues; ++q)
            for (unsigned s = 0; s < depth; ++s) slot_of[q][issue(q, s)] = s;
        const auto t0 = Clock::now(), end = t0 + std::chrono::seconds(seconds);
        while (Clock::now() < end) {
            for (const auto& c : fe.wait(std::chrono::milliseconds(1000))) {
                lat_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - started[c.queue][c.tag]).count());
                if (c.status != VIRTIO_BLK_S_OK) ++errors;
                const unsigned s = slot_of[c.queue][c.tag];
                slot_of[c.queue][issue(c.queue, s)] = s;
            }
        }
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        // Let what is in flight finish before the rings stop.
        for (int i = 0; i < 50; ++i) {
            bool idle = true;
            for (uint16_t q = 0; q < o.queues; ++q) idle = idle && fe.in_flight(q) == 0;
            if (idle) break;
            fe.wait(std::chrono::milliseconds(100));
        }
        std::sort(lat_us.begin(), lat_us.end());
        auto pct = [&](double p) { return lat_us.empty() ? 0.0 : lat_us[std::min(lat_us.size() - 1, static_cast<size_t>(p * lat_us.size()))]; };
        nlohmann::json j = {{"op", op},         {"bs", bs},
                            {"queues", o.queues}, {"depth", depth},
                            {"seconds", secs},  {"requests", lat_us.size()},
                            {"errors", errors}, {"iops", lat_us.size() / secs},
                            {"mb_s", lat_us.size() * double(bs) / secs / 1e6},
                            {"lat_p50_us", pct(0.5)}, {"lat_p99_us", pct(0.99)}};
        std::cout << j.dump() << "\n";
        // A back end that completed nothing is stuck, not slow: no IOPS figure may hide that.
        if (lat_us.empty()) {
            std::cerr << "blkrig-bench: no request completed in " << secs << " s (" << depth * o.queues << " in flight): the back end is stuck\n";
            return 1;
        }
        return errors ? 1 : 0;
    } catch (const std::exception& e) {
        std::cerr << "blkrig-bench: " << e.what() << "\n";
        return 3;
    }
}
