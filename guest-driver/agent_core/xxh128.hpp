// XXH3-128 of the bytes a step read or wrote, and of a disk's files: the
// content digest that `expect.sha256 = "file"` compares. Under TCG the
// guest's CPU model has no SHA extensions, and SHA-256 of a 4 MiB read
// costs about ten times the digest's guest time (docs/performance.md).
// libxxhash's header, built inline with its scalar code: the same digest
// on either side, and under TCG the scalar loop beats the emulated SSE2 one.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace blkrig::agent {

class Xxh128 {
public:
    Xxh128();
    ~Xxh128();
    Xxh128(const Xxh128&) = delete;
    Xxh128& operator=(const Xxh128&) = delete;
    void update(const void* data, size_t n);
    void update(std::string_view s) { update(s.data(), s.size()); }
    // 32 lowercase hex digits, high half first, as `xxhsum -H2` prints it.
    std::string hex() const;

private:
    // XXH3_state_t, kept opaque so includers do not pull in the header; it
    // must be 64-byte aligned.
    alignas(64) std::array<unsigned char, 640> state_{};
};

}  // namespace blkrig::agent
