// Limits of this host that a size must fit in before anything starts: its
// memory (/proc/meminfo MemTotal) and the free space of a filesystem
// (statvfs). The parser is pure, for tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>

namespace blkrig::host {

// MemTotal of a /proc/meminfo text, in bytes; nullopt if absent.
std::optional<uint64_t> parse_mem_total(std::string_view meminfo);

// MemTotal of this host, in bytes; nullopt if /proc/meminfo cannot be read.
std::optional<uint64_t> mem_total();

// Bytes an unprivileged writer may still use on the filesystem holding
// path (path itself, or its nearest existing parent); nullopt if unknown.
std::optional<uint64_t> free_bytes(const std::filesystem::path& path);

}  // namespace blkrig::host
