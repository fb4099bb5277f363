#include "agent_core/xxh128.hpp"

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_SCALAR
#include <xxhash.h>

#include <cstdio>

namespace blkrig::agent {

namespace {
XXH3_state_t* state(std::array<unsigned char, 640>& s) { return reinterpret_cast<XXH3_state_t*>(s.data()); }
const XXH3_state_t* state(const std::array<unsigned char, 640>& s) { return reinterpret_cast<const XXH3_state_t*>(s.data()); }
static_assert(sizeof(XXH3_state_t) <= 640 && alignof(XXH3_state_t) <= 64);
}  // namespace

Xxh128::Xxh128() {
    XXH3_INITSTATE(state(state_));
    XXH3_128bits_reset(state(state_));
}

Xxh128::~Xxh128() = default;

void Xxh128::update(const void* data, size_t n) {
    if (n) XXH3_128bits_update(state(state_), data, n);
}

std::string Xxh128::hex() const {
    const XXH128_hash_t h = XXH3_128bits_digest(state(state_));
    char out[33];
    std::snprintf(out, sizeof out, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                  static_cast<unsigned long long>(h.low64));
    return out;
}

}  // namespace blkrig::agent
