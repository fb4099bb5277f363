// What a host tool (sha256sum, xxhsum -H2) prints for bytes, and the same
// bytes fed to a digest class as the agent's reads come: the unit tests of
// agent_core's digests compare the two.
#pragma once

#include "agent_core/pattern.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace blkrig::agent::test {

// The first `width` characters `command FILE` prints for the bytes in FILE.
inline std::string digest_by_tool(const std::string& command, const std::vector<uint8_t>& data, size_t width) {
    char path[] = "/tmp/blkrig-digest-XXXXXX";
    const int fd = ::mkstemp(path);
    if (fd < 0) return "mkstemp failed";
    ::close(fd);
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    FILE* p = ::popen((command + " " + path).c_str(), "r");
    std::string out(width, '\0');
    const size_t n = p ? std::fread(out.data(), 1, width, p) : 0;
    if (p) ::pclose(p);
    std::remove(path);
    out.resize(n);
    return out;
}

// Random pattern bytes (seed 1) and their digest by H, updated in 4 KiB
// pieces with an odd first one.
template <class H>
std::pair<std::vector<uint8_t>, std::string> pattern_digest(size_t size) {
    std::vector<uint8_t> data(size);
    pattern::Stream(pattern::Kind::random, 1).fill(data.data(), data.size());
    H h;
    size_t pos = 0;
    for (size_t n = 1000; pos < data.size(); n = 4096) {
        n = std::min(n, data.size() - pos);
        h.update(data.data() + pos, n);
        pos += n;
    }
    return {std::move(data), h.hex()};
}

}  // namespace blkrig::agent::test
