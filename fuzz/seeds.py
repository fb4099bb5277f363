#!/usr/bin/python3
"""Writes the hand-made seeds of the binary fuzz targets into fuzz/corpus/:
valid descriptor chains for fuzz_chain, a front end's start-up for
fuzz_vhost_session and dm-log-writes logs for fuzz_write_log, in the input
layouts their sources describe.
Run from anywhere: fuzz/seeds.py (it overwrites only files named seed-*)."""
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

NEXT, WRITE, INDIRECT = 1, 2, 4
GPA = 0x10000  # fuzz_chain's guest memory


def desc(addr, length, flags=0, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)


def chain_seed(qsize_log2, head, table, blobs, indirect=False):
    """table: descriptors at memory offset 0; blobs: {offset: bytes}."""
    mem = bytearray(0x1000)
    mem[0:len(table)] = table
    for off, b in blobs.items():
        mem[off:off + len(b)] = b
    return struct.pack("<HH", qsize_log2, head | (0x8000 if indirect else 0)) + bytes(mem)


def blk_header(kind, sector):
    return struct.pack("<IIQ", kind, 0, sector)


def chain_seeds():
    out = {}
    hdr, data, st = 0x100, 0x200, 0x600
    # read 512 bytes at sector 5: header, data (device writes), status
    out["read"] = chain_seed(3, 0, desc(GPA + hdr, 16, NEXT, 1) + desc(GPA + data, 512, NEXT | WRITE, 2) + desc(GPA + st, 1, WRITE),
                             {hdr: blk_header(0, 5)})
    # write of two segments
    out["write-2seg"] = chain_seed(3, 1, desc(0, 0) + desc(GPA + hdr, 16, NEXT, 2) + desc(GPA + data, 256, NEXT, 3) +
                                   desc(GPA + data + 256, 256, NEXT, 4) + desc(GPA + st, 1, WRITE), {hdr: blk_header(1, 9)})
    out["flush"] = chain_seed(2, 0, desc(GPA + hdr, 16, NEXT, 1) + desc(GPA + st, 1, WRITE), {hdr: blk_header(4, 0)})
    out["get-id"] = chain_seed(2, 0, desc(GPA + hdr, 16, NEXT, 1) + desc(GPA + data, 20, NEXT | WRITE, 2) + desc(GPA + st, 1, WRITE),
                               {hdr: blk_header(8, 0)})
    # discard of 8 sectors at 64: one virtio_blk_discard_write_zeroes segment
    out["discard"] = chain_seed(2, 0, desc(GPA + hdr, 16, NEXT, 1) + desc(GPA + data, 16, NEXT, 2) + desc(GPA + st, 1, WRITE),
                                {hdr: blk_header(11, 0), data: struct.pack("<QII", 64, 8, 0)})
    # the same read through an indirect table at 0x800
    ind = desc(GPA + hdr, 16, NEXT, 1) + desc(GPA + data, 512, NEXT | WRITE, 2) + desc(GPA + st, 1, WRITE)
    out["read-indirect"] = chain_seed(3, 0, desc(GPA + 0x800, len(ind), INDIRECT), {hdr: blk_header(0, 5), 0x800: ind}, indirect=True)
    # the same chains in structured mode (head bit 14): addresses folded into memory
    for name, seed in list(out.items()):
        qsize, head = struct.unpack_from("<HH", seed)
        out[name + "-structured"] = struct.pack("<HH", qsize, head | 0x4000) + seed[4:]
    return out


# fuzz_vhost_session: the order of kRequests in fuzz_vhost_session.cpp
REQ = ["GET_FEATURES", "SET_FEATURES", "SET_OWNER", "RESET_OWNER", "SET_MEM_TABLE", "SET_VRING_NUM", "SET_VRING_ADDR",
       "SET_VRING_BASE", "GET_VRING_BASE", "SET_VRING_KICK", "SET_VRING_CALL", "SET_VRING_ERR", "GET_PROTOCOL_FEATURES",
       "SET_PROTOCOL_FEATURES", "GET_QUEUE_NUM", "SET_VRING_ENABLE", "GET_CONFIG", "SET_CONFIG", "GET_INFLIGHT_FD",
       "SET_INFLIGHT_FD", "SET_LOG_BASE", "RESET_DEVICE", "GET_MAX_MEM_SLOTS", "SET_STATUS", "GET_STATUS"]
RAW, KICK, POKE, CUT = len(REQ), len(REQ) + 1, len(REQ) + 2, len(REQ) + 3
V1, NEED_REPLY = 0, 0x08  # flags byte: bit 7 clear keeps version 1
SGPA = 0x100000  # the session fuzzer's structured mem table


def msg(name, payload=b"", flags=V1, fds=0):
    assert len(payload) % 2 == 0 or name not in ("SET_MEM_TABLE", "SET_VRING_ADDR")
    return bytes([REQ.index(name), flags, fds, len(payload)]) + payload


def structured(name, extra):
    """An odd length byte asks the fuzzer for a well-formed layout; a mem
    table carries the guest memory memfd (fd kind 0)."""
    fds = 1 if name == "SET_MEM_TABLE" else 0
    return bytes([REQ.index(name), V1, fds, 1]) + extra


def poke(off, b):
    return bytes([POKE]) + struct.pack("<HB", off, len(b)) + b


def u64(v):
    return struct.pack("<Q", v)


def state(i, n):
    return struct.pack("<II", i, n)


def session_start(queues=1, reply_ack=False):
    f = NEED_REPLY if reply_ack else V1
    s = msg("GET_FEATURES") + msg("SET_FEATURES", u64((1 << 32) | (1 << 30)))
    s += msg("GET_PROTOCOL_FEATURES") + msg("SET_PROTOCOL_FEATURES", u64(1 | 8 | 0x200))
    s += msg("GET_QUEUE_NUM") + msg("SET_OWNER", flags=f) + msg("GET_CONFIG", struct.pack("<III", 0, 60, 0) + bytes(60))
    s += structured("SET_MEM_TABLE", bytes([0, 0]))  # one region: the whole memfd
    for q in range(queues):
        base = 0x4000 * q
        s += msg("SET_VRING_NUM", state(q, 8), flags=f) + msg("SET_VRING_BASE", state(q, 0), flags=f)
        s += structured("SET_VRING_ADDR", bytes([q]) + struct.pack("<HHH", base, base + 0x1000, base + 0x2000))
        s += msg("SET_VRING_KICK", u64(q), fds=1 | (1 << 2)) + msg("SET_VRING_CALL", u64(q), fds=1 | (1 << 2))
        s += msg("SET_VRING_ENABLE", state(q, 1), flags=f)
    return s


def read_request(sector):
    """A read at `sector` in queue 0's ring: descriptors at 0, avail at 0x1000."""
    hdr, data, st = 0x3000, 0x3100, 0x3400
    table = desc(SGPA + hdr, 16, NEXT, 1) + desc(SGPA + data, 512, NEXT | WRITE, 2) + desc(SGPA + st, 1, WRITE)
    return poke(0, table) + poke(hdr, blk_header(0, sector)) + poke(0x1000, struct.pack("<HHH", 0, 1, 0)) + bytes([KICK])


def session_seeds():
    return {
        "start": session_start(),
        "start-reply-ack": session_start(reply_ack=True),
        "read": session_start() + read_request(5) + msg("GET_VRING_BASE", state(0, 0)),
        "two-queues": session_start(queues=2) + msg("SET_VRING_ENABLE", state(1, 0)) + msg("RESET_OWNER"),
        "config": msg("GET_PROTOCOL_FEATURES") + msg("GET_CONFIG", struct.pack("<III", 20, 4, 0) + bytes(4)) +
                  msg("SET_CONFIG", struct.pack("<III", 32, 1, 0) + b"\x01\x00"),
        "cut": msg("GET_FEATURES") + bytes([CUT, V1, 0, 0, 8]) + u64(1),
    }


LOG_MAGIC = 0x6a736677736872  # dm-log-writes' superblock magic
LOG_FLUSH, LOG_FUA, LOG_DISCARD, LOG_MARK = 1, 2, 4, 8


def log_entry(sector=0, nr=0, flags=0, data=b"", mark=b""):
    return (struct.pack("<QQQQ", sector, nr, flags, len(mark)) + mark).ljust(512, b"\0") + data


def log_file(entries, claimed=None):
    sb = struct.pack("<QQQI", LOG_MAGIC, 1, len(entries) if claimed is None else claimed, 512).ljust(512, b"\0")
    return sb + b"".join(entries)


def write_log_seeds():
    mark = lambda n: log_entry(flags=LOG_MARK, mark=f"blkrig marker {n}".encode())
    w = lambda sector, byte: log_entry(sector, 1, 0, bytes([byte]) * 512)
    return {
        "epochs": log_file([mark(0), w(8, 1), w(16, 2), log_entry(flags=LOG_FLUSH), mark(1), w(8, 3), log_entry(flags=LOG_FUA),
                            log_entry(32, 8, LOG_DISCARD), mark(2)]),
        "no-flush": log_file([mark(0), w(1, 1), w(2, 2), w(3, 3), mark(1)]),
        "cut": log_file([mark(0), w(8, 1), w(9, 2)], claimed=5)[:-100],
        # Finding 12: a FUA write's added flush is not an entry of the file; bytes past the count are stale.
        "fua-count": log_file([log_entry(8, 1, LOG_FUA, b"\1" * 512), w(16, 2)], claimed=3),
        "stale-tail": log_file([w(8, 1), w(16, 2), w(24, 3)], claimed=1),
    }


def main():
    for target, seeds in (("fuzz_chain", chain_seeds()), ("fuzz_vhost_session", session_seeds()), ("fuzz_write_log", write_log_seeds())):
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (d / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
