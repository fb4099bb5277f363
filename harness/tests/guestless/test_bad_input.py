"""Bad input to the real binaries, no guest: every argument error is exit 2 in
both blkrig and blkrig-device; values that cannot work (fault rules that
could never fire, a path given twice, sizes past the host) are exit 2 before
anything starts; a socket path never replaces a user's file or a live
socket; every failure of blkrig-device is a non-zero exit; and a trace with
impossible records fails --strict and every check."""

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import blkrig_test as bt

GET_FEATURES = 1
SCENARIOS = Path(__file__).resolve().parents[3] / "scenarios"


def msg(request, payload=b"", flags=1):
    return struct.pack("<III", request, flags, len(payload)) + payload


def run(*args, timeout=60, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


def device(*args, timeout=30):
    return run(bt.device(), *args, timeout=timeout)


class Device:
    """A blkrig-device listening on a socket; stopped (and waited for) by stop() or the fixture."""

    def __init__(self, sock, *args):
        self.sock = str(sock)
        self.proc = subprocess.Popen([str(bt.device()), "--socket-path", self.sock, "--ram", "16M", *map(str, args)],
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            assert self.proc.poll() is None, f"blkrig-device exited at start: {self.proc.stderr.read()}"
            assert time.monotonic() < deadline, "blkrig-device never listened"
            time.sleep(0.01)

    def features(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.sock)
            s.sendall(msg(GET_FEATURES))
            hdr = s.recv(12, socket.MSG_WAITALL)
            assert len(hdr) == 12, "no reply"
            return struct.unpack("<Q", s.recv(8, socket.MSG_WAITALL))[0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        return rc, self.proc.stderr.read()


@pytest.fixture
def devices():
    started = []
    yield lambda *a: started.append(Device(*a)) or started[-1]
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


# --- argument errors: 2, never CLI11's own 104..109 ---------------------------------------------

@pytest.mark.parametrize("args", [
    ["--bogus"],                                  # unknown option
    ["--ram"],                                    # missing value
    ["--ram", "16M", "--num-queues", "0"],        # failed check
    ["--ram", "16M", "--log-level", "loud"],      # not a member
    ["--ram", "16M", "--socket-path", "s", "extra"],  # extra positional
], ids=["unknown", "missing-value", "range", "member", "extra-positional"])
def test_device_argument_errors_exit_2(args):
    r = device(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.strip()


@pytest.mark.parametrize("args", [
    ["trace", "dump", "t.bin", "--bogus"],          # unknown option
    ["trace", "dump", "t.bin", "--format"],         # missing value
    ["trace", "dump", "t.bin", "--format", "xml"],  # failed check
    ["trace", "dump", "a.bin", "b.bin"],            # extra positional
    ["run"],                                        # missing positional
    ["frobnicate"],                                 # unknown subcommand
], ids=["unknown", "missing-value", "member", "extra-positional", "missing-positional", "unknown-subcommand"])
def test_blkrig_argument_errors_exit_2(args):
    r = run(bt.blkrig(), *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.strip()


def test_help_is_still_0():
    assert run(bt.blkrig(), "--help").returncode == 0
    assert device("--help").returncode == 0


# --- blkrig-device: every failure is non-zero ---------------------------------------------------

def test_device_fd_that_is_not_open_or_not_a_socket(tmp_path):
    r = device("--fd", "99", "--ram", "1M")
    assert r.returncode == 2 and "--fd 99: not an open file descriptor" in r.stderr, r
    f = open(tmp_path / "plain", "w")
    try:
        r = subprocess.run([str(bt.device()), "--fd", str(f.fileno()), "--ram", "1M"], pass_fds=[f.fileno()],
                           capture_output=True, text=True, timeout=30)
    finally:
        f.close()
    assert r.returncode == 2 and "not a socket" in r.stderr, r


def test_device_once_session_ending_on_an_error_exits_1(tmp_path, devices):
    d = devices(tmp_path / "s", "--once")
    # A connection that closes before its first message (a liveness probe) is not the session.
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(d.sock)
    time.sleep(0.2)
    assert d.proc.poll() is None, "a probe ended the --once device"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(d.sock)
        s.sendall(msg(9999))  # no such vhost-user request: the session is refused
        assert s.recv(64) == b""
    rc = d.proc.wait(timeout=10)
    assert rc == 1, (rc, d.proc.stderr.read())


def test_device_connected_fd_session_error_exits_1():
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([str(bt.device()), "--fd", str(theirs.fileno()), "--ram", "1M"], pass_fds=[theirs.fileno()],
                            stderr=subprocess.PIPE, text=True)
    try:
        theirs.close()
        ours.sendall(b"\x01\x00")  # the connection closes inside a message header
        ours.close()
        assert proc.wait(timeout=10) == 1
        assert "ended on an error" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_device_ram_past_the_host_memory(tmp_path):
    r = device("--socket-path", tmp_path / "never.sock", "--ram", "999999G")
    assert r.returncode == 2 and "MemTotal in /proc/meminfo" in r.stderr, r
    assert not (tmp_path / "never.sock").exists()


# --- fault rules that could never fire ----------------------------------------------------------

@pytest.mark.parametrize("rule,says", [
    ("ioerr sector=2048..", "sector=2048 is past the device's last sector 2047 (it has 2048 sectors)"),
    ("ioerr op=read queue=9", "queue=9 but the device has 1 queue (0..0)"),
    ("ioerr op=read op=write", "op= given twice"),
])
def test_device_refuses_rules_that_cannot_work(tmp_path, rule, says):
    r = device("--socket-path", tmp_path / "s", "--ram", "1M", "--fault", rule)
    assert r.returncode == 2 and says in r.stderr, r
    assert not (tmp_path / "s").exists()
    (tmp_path / "rules.txt").write_text(f"ioerr op=flush\n{rule}\n")
    r = device("--socket-path", tmp_path / "s", "--ram", "1M", "--faults", tmp_path / "rules.txt")
    assert r.returncode == 2 and says in r.stderr, r
    if "twice" not in says:
        assert f"rules.txt:2" in r.stderr, r.stderr


def test_run_refuses_rules_that_could_never_fire_before_anything_starts(tmp_path):
    """A scenario's [[faults]] when it is loaded, and --faults against the scenario's device."""
    sc = tmp_path / "f.toml"
    sc.write_text('[disk]\nsize = "1M"\n[[faults]]\nrule = "ioerr sector=4096.."\n[[steps]]\nop = "sync"\n')
    r = run(bt.blkrig(), "run", sc, "--out", tmp_path / "r")
    assert r.returncode == 2 and "f.toml:4:" in r.stderr and "sector=4096 is past the device's last sector 4095" in r.stderr, r
    sc.write_text('[disk]\nsize = "1M"\n[[steps]]\nop = "sync"\n')
    (tmp_path / "rules.txt").write_text("ioerr op=flush\nioerr queue=3\n")
    r = run(bt.blkrig(), "run", sc, "--out", tmp_path / "r", "--faults", tmp_path / "rules.txt")
    assert r.returncode == 2 and "rules.txt:2: queue=3 but the device has 1 queue" in r.stderr, r
    assert not (tmp_path / "r").exists()


def test_control_refuses_rules_that_could_never_fire(tmp_path, devices):
    d = devices(tmp_path / "s", "--control", tmp_path / "ctl", "--num-queues", "2")
    for rule, says, ok in [("ioerr queue=2", "queue=2 but the device has 2 queues", False),
                           ("ioerr sector=40000", "past the device's last sector 32767", False),
                           ("ioerr queue=1 sector=32767", None, True)]:
        r = run(bt.blkrig(), "fault", "--control", tmp_path / "ctl", "add", rule)
        if ok:
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == 2 and says in r.stderr, r
    r = run(bt.blkrig(), "fault", "--control", tmp_path / "ctl", "list")
    assert r.stdout.count("ioerr") == 1
    assert d.stop()[0] == 0


# --- paths: the same file for two jobs, and socket paths ----------------------------------------

def test_device_refuses_one_path_for_two_jobs(tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(b"\x5a" * 65536)
    cases = [
        (["--socket-path", tmp_path / "s", "--ram", "1M", "--control", tmp_path / "s"], "--socket-path and --control both name"),
        (["--socket-path", tmp_path / "s", "--blk-file", img, "--trace", img], "--blk-file and --trace both name"),
        (["--socket-path", tmp_path / "s", "--ram", "1M", "--trace", tmp_path / "t", "--write-log", tmp_path / "x" / ".." / "t"],
         "--trace and --write-log both name"),
    ]
    (tmp_path / "x").mkdir()
    for args, says in cases:
        r = device(*args)
        assert r.returncode == 2 and says in r.stderr, r
    assert img.read_bytes() == b"\x5a" * 65536, "the image was written over"
    assert not (tmp_path / "t").exists() and not (tmp_path / "s").exists()


def test_control_never_deletes_a_users_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x\n")
    r = device("--socket-path", tmp_path / "s", "--ram", "1M", "--control", notes)
    assert r.returncode == 2 and f"--control {notes}: exists and is not a socket" in r.stderr, r
    assert notes.read_text() == "x\n"
    # blkrig run refuses it before anything starts: no run folder, no disk, no boot.
    t0 = time.monotonic()
    r = run(bt.blkrig(), "run", SCENARIOS / "read-contiguous.toml", "--out", tmp_path / "r",
            "--control", notes, cwd=tmp_path)
    assert r.returncode == 2 and "exists and is not a socket" in r.stderr, r
    assert notes.read_text() == "x\n"
    assert not (tmp_path / "r").exists()
    assert time.monotonic() - t0 < 10


def test_live_socket_is_in_use_and_a_stale_one_is_replaced(tmp_path, devices):
    first = devices(tmp_path / "s", "--control", tmp_path / "ctl")
    r = device("--socket-path", tmp_path / "s", "--ram", "1M")
    assert r.returncode == 2 and "in use" in r.stderr, r
    r = device("--socket-path", tmp_path / "other", "--ram", "1M", "--control", tmp_path / "ctl")
    assert r.returncode == 2 and "--control" in r.stderr and "in use" in r.stderr, r
    assert first.features() & (1 << 32), "the first device no longer serves its socket"
    # A device killed outright leaves its sockets behind: the next one takes them over.
    first.proc.kill()
    first.proc.wait()
    assert (tmp_path / "s").exists() and (tmp_path / "ctl").exists()
    second = devices(tmp_path / "s", "--control", tmp_path / "ctl")
    # The stale path was there before it started: wait until the new socket answers.
    deadline = time.monotonic() + 10
    while True:
        assert second.proc.poll() is None, second.proc.stderr.read()
        try:
            assert second.features() & (1 << 32)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "the second device never took over the stale socket"
            time.sleep(0.05)
    assert run(bt.blkrig(), "fault", "--control", tmp_path / "ctl", "list").returncode == 0
    assert second.stop()[0] == 0
    assert not (tmp_path / "s").exists() and not (tmp_path / "ctl").exists()


# --- sizes past the host: exit 2 before anything is built ---------------------------------------

@pytest.mark.parametrize("table,says", [
    ('[disk]\nsize = "999999G"\n', "disk.size is 1023998976 MiB, more than the"),
    ('[guest]\nmemory = "999999G"\n', "guest.memory is 1023998976 MiB, more than this host's"),
])
def test_run_refuses_sizes_past_the_host(tmp_path, table, says):
    sc = tmp_path / "big.toml"
    sc.write_text(table + '[[steps]]\nop = "sync"\n')
    t0 = time.monotonic()
    r = run(bt.blkrig(), "run", sc, "--out", tmp_path / "r")
    assert r.returncode == 2 and says in r.stderr and "big.toml:2" in r.stderr, r
    assert ("statvfs" in r.stderr) or ("/proc/meminfo" in r.stderr)
    assert not (tmp_path / "r").exists()
    assert time.monotonic() - t0 < 10


def test_boot_refuses_memory_past_the_host(tmp_path):
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "vmlinuz").write_bytes(b"x")
    r = run(bt.blkrig(), "boot", "--kernel", tmp_path / "k", "--initrd", "/dev/null", "--disk", "/dev/null", "--memory", "999999999",
            "--out", tmp_path / "r")
    assert r.returncode == 2 and "MemTotal" in r.stderr, r


# --- impossible trace records -------------------------------------------------------------------

HEADER = struct.Struct("<8sIIQQII")
REQUEST = struct.Struct("<IHHQQQQQIHHHBBHH")  # prefix, then the request body without segment lengths


def record_offsets(b):
    magic, version, json_len, *_ = HEADER.unpack_from(b, 0)
    off = (HEADER.size + json_len + 7) // 8 * 8
    out = []
    while off + 8 <= len(b):
        length, kind, _ = struct.unpack_from("<IHH", b, off)
        out.append((off, kind))
        off += length
    return out


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A run folder around a real blkrig-device trace (our front end, no guest)."""
    out = tmp_path_factory.mktemp("badtrace") / "run"
    r = run(bt.build_dir() / "harness" / "tests" / "guestless-run-folder", out, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def test_flipped_bytes_fail_strict_and_every_check(real_run, tmp_path):
    good = (real_run / "trace.bin").read_bytes()
    for cmd in (["dump"], ["summary"], ["export", "--format", "csv"]):
        r = run(bt.blkrig(), "trace", *cmd, real_run / "trace.bin", "--strict")
        assert r.returncode == 0, (cmd, r.stderr)
    before = run(bt.blkrig(), "check", real_run)
    requests = [off for off, kind in record_offsets(good) if kind == 1]
    assert len(requests) > 10
    at = requests[len(requests) // 2]
    seq = struct.unpack_from("<Q", good, at + 8)[0]
    # 16 bytes flipped in the middle of a request: t_complete_ns, type, queue, head.
    bad = bytearray(good)
    for i in range(at + 8 + 32, at + 8 + 48):
        bad[i] ^= 0xFF
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-a", str(real_run), str(run_dir)], check=True)
    (run_dir / "trace.bin").write_bytes(bytes(bad))
    trace = run_dir / "trace.bin"
    for cmd in (["dump"], ["summary"], ["export", "--format", "csv"]):
        r = run(bt.blkrig(), "trace", *cmd, trace, "--strict")
        assert r.returncode == 1, (cmd, r.returncode, r.stderr)
        assert f"impossible record at byte {at} (request seq {seq}): queue: " in r.stderr, r.stderr
        assert r.stdout == "", "--strict printed records past the bad one"
        r = run(bt.blkrig(), "trace", *cmd, trace)
        assert r.returncode == 0 and "warning" in r.stderr and f"seq {seq}" in r.stderr, (cmd, r.stderr)
    records = [json.loads(l) for l in run(bt.blkrig(), "trace", "dump", trace).stdout.splitlines()]
    assert seq not in [x.get("seq") for x in records if x["kind"] == "request"]
    summary = json.loads(run(bt.blkrig(), "trace", "summary", trace, "--json").stdout)
    assert summary["bad_records"] == 1 and f"seq {seq}" in summary["first_bad_record"]
    r = run(bt.blkrig(), "check", run_dir)
    assert r.returncode == 1, (before.returncode, r.returncode, r.stdout)
    assert "FAIL the device trace valid_records: 1 impossible record" in r.stdout, r.stdout
    assert "impossible record" in r.stdout.split("findings:")[1]


def write_trace(path, requests, num_queues=1, capacity=2048):
    """A trace as blkrig-device writes one: header, request records, end record."""
    b = bytearray(HEADER.pack(b"BLKRIGTR", 1, 0, 1000, capacity, 512, num_queues))
    for seq, sector, nbytes, status in requests:
        b += REQUEST.pack(64, 1, 0, seq, sector, nbytes, 2000 + seq, 3000 + seq, 0, 0, 0, 1, status, 0, 0, 0)
    b += struct.pack("<IHHQQQ", 32, 4, 0, 9000, len(requests), 0)
    path.write_bytes(bytes(b))


def test_wrapping_request_is_impossible_and_totals_do_not_wrap(tmp_path):
    t = tmp_path / "wrap.bin"
    write_trace(t, [(0, 8, 4096, 0), (1, 2**64 - 256, 2**64 - 1, 0)])
    r = run(bt.blkrig(), "trace", "dump", t, "--strict")
    assert r.returncode == 1 and "(request seq 1): sector: 18446744073709551360 + " in r.stderr and "ends past the capacity" in r.stderr, r
    # Refused requests keep what the guest sent; their byte total stops at 2^64-1.
    write_trace(t, [(0, 8, 4096, 0), (1, 2**64 - 256, 2**63, 1), (2, 2**64 - 256, 2**63, 1)])
    r = run(bt.blkrig(), "trace", "summary", t, "--json", "--strict")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["ops"]["read"]["bytes"] == 2**64 - 1 and s["ops"]["read"]["count"] == 3 and s["bad_records"] == 0


@pytest.mark.parametrize("answer,code,says", [
    (b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":5}}\n', 2, 'fault.list: {"code":-32000,"message":5}'),
    (b'not json\n', 3, "unreadable answer from"),
    (b'{"jsonrpc":"2.0","id":1}\n', 3, "holds neither result nor error"),
    (b'', 3, "unreadable answer from"),
])
def test_control_client_names_an_answer_it_cannot_use(tmp_path, answer, code, says):
    """A control socket that answers something other than a JSON-RPC
    response (a wrong program at the path, a broken device): a message
    naming the socket, never a crash."""
    path = tmp_path / "ctl"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    def serve():
        c, _ = srv.accept()
        with c:
            c.recv(4096)
            c.sendall(answer)
    t = threading.Thread(target=serve)
    t.start()
    try:
        r = run(bt.blkrig(), "fault", "--control", path, "list")
    finally:
        t.join(timeout=10)
        srv.close()
    assert r.returncode == code and says in r.stderr, r
