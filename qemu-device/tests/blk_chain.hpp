// Building virtio-blk request chains in fake guest memory for the request
// and device tests.
#pragma once

#include "fake_guest.hpp"

#include "virtio/chain.hpp"

#include <linux/virtio_blk.h>

#include <stdexcept>
#include <variant>
#include <vector>

namespace blkrig::test {

class BlkChains {
public:
    static constexpr uint16_t kQueueSize = 64;

    explicit BlkChains(int regions = 1) : g(regions), table(g.alloc(16ull * kQueueSize)) {}

    // Header for a request of this type and sector; returns its gpa.
    uint64_t header(uint32_t type, uint64_t sector) {
        const uint64_t at = g.alloc(16);
        put_header(at, type, sector);
        return at;
    }
    void put_header(uint64_t at, uint32_t type, uint64_t sector) {
        virtio_blk_outhdr h{};
        h.type = type;
        h.sector = sector;
        g.put(at, h);
    }
    // One discard/write-zeroes segment at gpa `at`.
    void put_range(uint64_t at, uint64_t sector, uint32_t num_sectors, uint32_t flags) {
        virtio_blk_discard_write_zeroes r{};
        r.sector = sector;
        r.num_sectors = num_sectors;
        r.flags = flags;
        g.put(at, r);
    }
    // A status byte preset to a value the device never writes, so a test sees
    // whether it was written.
    uint64_t status() {
        const uint64_t at = g.alloc(1, 1);
        g.fill(at, 0xee, 1);
        return at;
    }

    // Links segs at the start of the table and walks them; a walk error is a
    // bug in the test.
    virtio::DescriptorChain walk(std::initializer_list<FakeGuest::Seg> segs) {
        const uint16_t head = g.link(table, 0, segs);
        auto r = virtio::walk_chain(g.table(table, kQueueSize), kQueueSize, head, g.mem(), true);
        if (auto* e = std::get_if<virtio::ChainError>(&r)) throw std::logic_error("test chain is malformed: " + e->message());
        return std::get<virtio::DescriptorChain>(std::move(r));
    }

    FakeGuest g;
    uint64_t table;
};

}  // namespace blkrig::test
