"""blkrig-device driven over its vhost-user socket by a small front end in this
test, no guest: capabilities, negotiation, and malformed messages that must
close one connection while the daemon keeps serving the next."""

import array
import json
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

import blkrig_test as bt

GET_FEATURES, SET_FEATURES, SET_MEM_TABLE, SET_VRING_NUM = 1, 2, 5, 8
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_CONFIG = 15, 16, 17, 24
NEED_REPLY = 1 << 3
PROTO_REPLY_ACK = 1 << 3


def msg(request, payload=b"", flags=1):
    return struct.pack("<III", request, flags, len(payload)) + payload


class Device:
    def __init__(self, tmp_path, *args):
        self.sock = str(tmp_path / "vu.sock")
        self.trace = tmp_path / "trace.bin"
        self.log = open(tmp_path / "device.log", "w+")
        self.proc = subprocess.Popen([str(bt.device()), "--socket-path", self.sock, "--ram", "16M", "--trace", str(self.trace), *args],
                                     stderr=self.log)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            assert self.proc.poll() is None, "blkrig-device exited at start"
            assert time.monotonic() < deadline, "blkrig-device never listened"
            time.sleep(0.01)

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.sock)
        return s

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        self.log.seek(0)
        return rc, self.log.read()


@pytest.fixture
def dev(tmp_path):
    d = Device(tmp_path)
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def recv_reply(s, request):
    hdr = s.recv(12, socket.MSG_WAITALL)
    assert len(hdr) == 12, "no reply"
    req, flags, size = struct.unpack("<III", hdr)
    assert req == request and flags == 0x5, (req, flags)
    return s.recv(size, socket.MSG_WAITALL) if size else b""


def closed_by_peer(s):
    try:
        return s.recv(64) == b""
    except ConnectionResetError:  # we still had unread bytes in flight: also closed
        return True


def get_features(d):
    with d.connect() as s:
        s.sendall(msg(GET_FEATURES))
        (f,) = struct.unpack("<Q", recv_reply(s, GET_FEATURES))
        return f


def test_print_capabilities():
    r = subprocess.run([str(bt.device()), "--print-capabilities"], capture_output=True, text=True, check=True)
    caps = json.loads(r.stdout)
    assert caps["type"] == "block"
    assert {"blk-file", "read-only"} <= set(caps["features"])


def test_negotiation(dev):
    f = get_features(dev)
    assert f & (1 << 30), "VHOST_USER_F_PROTOCOL_FEATURES not offered"
    assert f & (1 << 32), "VIRTIO_F_VERSION_1 not offered"
    with dev.connect() as s:
        s.sendall(msg(GET_PROTOCOL_FEATURES))
        (p,) = struct.unpack("<Q", recv_reply(s, GET_PROTOCOL_FEATURES))
        assert p & 1 and p & PROTO_REPLY_ACK and p & (1 << 9)  # MQ, REPLY_ACK, CONFIG
        assert p & (1 << 12), "INFLIGHT_SHMFD not offered (a restarted device resumes from the inflight region)"
        s.sendall(msg(SET_PROTOCOL_FEATURES, struct.pack("<Q", PROTO_REPLY_ACK)))
        s.sendall(msg(GET_QUEUE_NUM))
        assert struct.unpack("<Q", recv_reply(s, GET_QUEUE_NUM)) == (1,)
        # Capacity: 16 MiB in 512-byte sectors.
        s.sendall(msg(GET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8)))
        cfg = recv_reply(s, GET_CONFIG)
        assert struct.unpack("<IIIQ", cfg) == (0, 8, 0, 32768)
        # REPLY_ACK: a bad queue size is refused, a good one accepted.
        s.sendall(msg(SET_VRING_NUM, struct.pack("<II", 0, 3), flags=1 | NEED_REPLY))
        assert struct.unpack("<Q", recv_reply(s, SET_VRING_NUM))[0] != 0
        s.sendall(msg(SET_VRING_NUM, struct.pack("<II", 0, 128), flags=1 | NEED_REPLY))
        assert struct.unpack("<Q", recv_reply(s, SET_VRING_NUM)) == (0,)
        # Features that were not offered are refused.
        s.sendall(msg(SET_FEATURES, struct.pack("<Q", 1 << 63), flags=1 | NEED_REPLY))
        assert struct.unpack("<Q", recv_reply(s, SET_FEATURES))[0] != 0


BAD = {
    "bad version": msg(GET_FEATURES, flags=2),
    "oversized payload": struct.pack("<III", GET_FEATURES, 1, 5000) + bytes(64),
    "unknown request": msg(200),
    "mem table without fds": msg(SET_MEM_TABLE, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, 0, 0)),
    "mem table with 9 regions": msg(SET_MEM_TABLE, struct.pack("<II", 9, 0) + bytes(32 * 9)),
    "short payload": msg(SET_FEATURES, b"\0\0\0\0"),
    "queue index out of range": msg(SET_VRING_NUM, struct.pack("<II", 7, 128)),
    "cut-short header": struct.pack("<II", GET_FEATURES, 1),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_message_closes_connection_and_daemon_keeps_serving(dev, case):
    with dev.connect() as s:
        s.sendall(BAD[case])
        if case == "cut-short header":
            s.shutdown(socket.SHUT_WR)
        assert closed_by_peer(s), f"{case}: the connection stayed open"
    assert dev.proc.poll() is None, f"{case}: blkrig-device died"
    assert get_features(dev) & (1 << 32), f"{case}: the next connection was not served"
    rc, log = dev.stop()
    assert rc == 0, log
    assert "closing the connection" in log or "closed inside a message header" in log, log
    # The device closed its trace cleanly: it ends with an end record.
    kinds = [r["kind"] for r in bt.trace_records(dev.trace)]
    assert kinds[-1] == "end" and "incomplete" not in kinds
    assert not os.path.exists(dev.sock), "socket left behind"


def test_fd_passing_wrong_count_does_not_leak_or_crash(dev):
    r, w = os.pipe()
    try:
        with dev.connect() as s:
            # GET_FEATURES must carry no fds: this one carries two.
            s.sendmsg([msg(GET_FEATURES)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))])
            assert closed_by_peer(s)
    finally:
        os.close(r)
        os.close(w)
    assert get_features(dev)
    fds = os.listdir(f"/proc/{dev.proc.pid}/fd")
    assert len(fds) < 16, f"blkrig-device holds {len(fds)} fds after refusing a message"


@pytest.mark.parametrize("args,code,text", [
    ([], 2, "no disk"),
    (["--blk-file", "/nonexistent/disk.img"], 1, "/nonexistent/disk.img"),
    (["--ram", "16M", "--snapshot"], 2, "--snapshot needs --blk-file"),
])
def test_device_bad_arguments(tmp_path, args, code, text):
    r = subprocess.run([str(bt.device()), "--socket-path", str(tmp_path / "s"), *args], capture_output=True, text=True, timeout=10)
    assert r.returncode == code and text in r.stderr, r.stderr
    assert not (tmp_path / "s").exists()


def test_socket_path_too_long(tmp_path):
    long = "/tmp/" + "x" * 120
    r = subprocess.run([str(bt.device()), "--socket-path", long, "--ram", "1M"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "too long" in r.stderr


def test_trace_dump_rejects_other_files(tmp_path):
    f = tmp_path / "not-a-trace"
    f.write_bytes(b"hello world, this is not a trace file at all......")
    r = subprocess.run([str(bt.blkrig()), "trace", "dump", str(f)], capture_output=True, text=True)
    assert r.returncode == 2 and "not a blkrig trace" in r.stderr


def test_trace_of_killed_device_says_incomplete(tmp_path):
    d = Device(tmp_path)
    get_features(d)
    d.proc.kill()
    d.proc.wait()
    r = subprocess.run([str(bt.blkrig()), "trace", "dump", str(d.trace), "--strict"], capture_output=True, text=True)
    assert r.returncode == 1 and "incomplete" in r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["kind"] == "incomplete"


def test_boot_with_missing_kernel_is_a_usage_error(tmp_path):
    r = subprocess.run([str(bt.blkrig()), "boot", "--kernel", "no-such-kernel", "--initrd", "/dev/null", "--disk", "/dev/null",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 2 and "no-such-kernel" in r.stderr and "fetch-debian" in r.stderr


@pytest.mark.parametrize("mode", ["listening", "connected"])
def test_inherited_fd(tmp_path, mode):
    """--fd serves an inherited socket: a listening one accepts front ends, a connected one is one session."""
    if mode == "listening":
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(str(tmp_path / "s"))
        lsock.listen(1)
        fd, ours = lsock.fileno(), None
    else:
        ours, theirs = socket.socketpair()
        fd = theirs.fileno()
    proc = subprocess.Popen([str(bt.device()), "--fd", str(fd), "--ram", "1M"], pass_fds=[fd], stderr=subprocess.PIPE)
    try:
        if mode == "listening":
            lsock.close()
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(str(tmp_path / "s"))
        else:
            theirs.close()
            s = ours
            s.settimeout(10)
        s.sendall(msg(GET_FEATURES))
        (f,) = struct.unpack("<Q", recv_reply(s, GET_FEATURES))
        assert f & (1 << 32)
        s.close()
        if mode == "connected":
            # The one session is over: the device exits by itself.
            assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
