"""The back end dies mid-I/O and comes back: a guest fio randwrite with crc32c
verify on blkrig-device, killed with SIGKILL three times from outside (the pid in
device.pid) and once by a `crash` fault rule, with `[device] restart_on_crash`.
QEMU reconnects (reconnect=1), the inflight region resumes what was in flight,
and fio's verify must be clean, the guest must log no I/O error, and the one
continued trace must hold every request once (resubmitted ones under their
first seq)."""

import json
import os
import re
import select
import signal
import subprocess
import time

import pytest

import blkrig_test as bt
from test_vm_console import vm_console

pytestmark = [
    pytest.mark.skipif(not bt.have_kernel(), reason="default kernel not fetched: run ci/setup"),
    pytest.mark.skipif(not bt.have("fio"), reason="fio is not installed (ci/setup installs it)"),
]

SCENARIO = """[disk]
fs = "raw"
size = "64M"
[device]
restart_on_crash = true
[guest]
programs = ["fio"]
[[steps]]
op = "sync"
"""

# Direct random 4 KiB writes, 16 in flight, each block checked by crc32c
# after the write phase; the verify pass reads back everything written.
FIO = ("fio --name=v --filename=/dev/vda --rw=randwrite --bs=4k --size=32M --direct=1 --ioengine=libaio --iodepth=16 "
       "--verify=crc32c --verify_fatal=1 --output=/tmp/fio.out; echo FIO\"\"-RC=$?\r")


def read_through(fd, needle: bytes, tail: bytes, timeout: float) -> bytes:
    """Console output up to `tail` after `needle` (both may come in one read)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf or tail not in buf[buf.index(needle) + len(needle):]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} then {tail!r} did not appear; console so far:\n{buf.decode(errors='replace')[-2000:]}")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf


def device_pid(out) -> int:
    return int((out / "device.pid").read_text())


def wait_new_device(out, old_pid: int, timeout: float = 20) -> int:
    """The launcher writes the next process's pid once it started it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = device_pid(out)
        except (OSError, ValueError):
            pid = old_pid
        if pid != old_pid:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no new blkrig-device after pid {old_pid} died")


def writes_in_trace(out) -> int:
    recs = bt.trace_records(out / "trace.bin")
    return sum(1 for r in recs if r["kind"] == "request" and r["op"] == "write")


def wait_writes(out, more_than: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = writes_in_trace(out)
        if n > more_than:
            return n
        time.sleep(0.2)
    raise AssertionError(f"the guest wrote no more than {more_than} blocks in {timeout} s")


def test_fio_verify_survives_device_kills(tmp_path):
    scen = tmp_path / "reconnect.toml"
    scen.write_text(SCENARIO)
    out = tmp_path / "vm"
    killed = []
    with vm_console("--scenario", str(scen), "--out", str(out)) as (proc, master, banner):
        ctl = re.search(rb"device control: (\S+)", banner).group(1).decode()
        # The first kill by the device itself: a crash rule on fio's 300th
        # write (the rule lives in this process only).
        pid = device_pid(out)
        add = subprocess.run([str(bt.blkrig()), "fault", "--control", ctl, "add", "crash op=write nth=300"],
                             capture_output=True, text=True, timeout=30)
        assert add.returncode == 0, add.stderr
        os.write(master, FIO.encode())
        wait_new_device(out, pid, timeout=120)
        killed.append(pid)
        # Three from outside, at write counts fio's 8192 writes pass on the way
        # however fast it runs (each restart also pauses the guest about 1 s).
        for threshold in (1500, 3000, 4500):
            wait_writes(out, threshold)
            pid = device_pid(out)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            wait_new_device(out, pid)
        fio = read_through(master, b"FIO-RC=", b"# ", 240)
        assert b"FIO-RC=0" in fio, fio.decode(errors="replace")[-3000:]
        # fio's own summary: no error, and no verify complaint (the "" keeps
        # the typed line itself from matching).
        os.write(master, b"grep -q 'err= 0' /tmp/fio.out && ! grep -qiE 'verify fail|bad magic|bad header' /tmp/fio.out "
                         b"&& echo FIO\"\"-CLEAN\r")
        read_through(master, b"FIO-CLEAN", b"# ", 30)
        # The guest kernel saw no I/O error and no hung task while the device was away.
        os.write(master, b"echo DMESG\"\"-ERRORS=$(dmesg | grep -ciE 'I/O error|blk_update_request|hung_task|timed out|virtio.*error')\r")
        dm = read_through(master, b"DMESG-ERRORS=", b"\n", 30)
        assert re.search(rb"DMESG-ERRORS=0\b", dm), dm.decode(errors="replace")
    assert proc.returncode == 0

    boot = json.loads((out / "boot.json").read_text())
    assert boot["outcome"] == "ok", boot["message"]
    assert len(boot["restarts"]) == 4, boot["restarts"]
    assert all("signal 9" in r["previous_exit"] for r in boot["restarts"]), boot["restarts"]

    summary = subprocess.run([str(bt.blkrig()), "trace", "summary", str(out / "trace.bin"), "--json"],
                             capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0, summary.stderr
    s = json.loads(summary.stdout)
    assert s["complete"], s["incomplete_reason"]
    assert s["restarts"] == 4
    assert s["seq_duplicates"] == 0, "a request completed twice"
    assert s["seq_missing"] == 0, "a request fetched before a kill never completed"
    assert s["resubmitted"] >= 1, "no request was in flight at any of the kills"
    assert s["ops"]["write"]["errors"] == 0 and s["ops"]["read"]["errors"] == 0

    recs = bt.trace_records(out / "trace.bin")
    events = [r for r in recs if r["kind"] == "event"]
    assert sum(1 for e in events if e["event"] == "restart") == 4
    resubmitted = [r for r in recs if r["kind"] == "request" and r.get("resubmitted")]
    seqs = [r["seq"] for r in recs if r["kind"] in ("request", "marker")]
    assert len(seqs) == len(set(seqs)) and sorted(seqs) == list(range(len(seqs)))
    # A resubmitted request completed after the restart that resumed it.
    restarts_ns = [e["t_ns"] for e in events if e["event"] == "restart"]
    for r in resubmitted:
        assert any(t <= r["t_submit_ns"] for t in restarts_ns), r
    # The I/O gap each restart cost: the last completion before it to the
    # first arrival after it (QEMU retries the socket once a second).
    done = sorted(r["t_complete_ns"] for r in recs if r["kind"] == "request")
    arrive = sorted(r["t_submit_ns"] for r in recs if r["kind"] == "request")
    stalls = []
    for t in restarts_ns:
        before = max((c for c in done if c <= t), default=t)
        after = min((a for a in arrive if a >= t), default=t)
        stalls.append((after - before) / 1e9)
    print(f"kills survived: {len(killed)}; I/O stall per restart (s): {', '.join(f'{x:.2f}' for x in stalls)}; "
          f"resubmitted: {s['resubmitted']}; requests: {s['requests']}")
    assert all(x < 10 for x in stalls), stalls
    # Nothing the run started (any of the device processes, QEMU) is left.
    assert bt.processes_mentioning(str(out)) == []


def test_a_run_with_a_crash_rule_passes_and_check_finds_nothing(tmp_path):
    """scenarios/write-crash-restart.toml through `blkrig run`: the device dies with
    the third write in flight; the steps, the run model and `blkrig check` see
    every request once (the resubmitted write under its first seq)."""
    out = tmp_path / "run"
    r = subprocess.run([str(bt.blkrig()), "run", str(bt.REPO / "scenarios" / "write-crash-restart.toml"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 device restart(s); 1 request(s) resubmitted" in r.stdout, r.stdout
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["device_trace"]["restarts"] == 1 and verdict["device_trace"]["resubmitted"] == 1
    assert verdict["findings"] == []
    boot = json.loads((out / "boot.json").read_text())
    assert [x["previous_exit"] for x in boot["restarts"]] == ["killed by signal 9 (Killed)"]
    assert "crash (SIGKILL) with write" in (out / "device.log").read_text()
    chk = subprocess.run([str(bt.blkrig()), "check", str(out)], capture_output=True, text=True, timeout=120)
    assert chk.returncode == 0 and "findings: none" in chk.stdout, chk.stdout + chk.stderr
    resubmitted = [x for x in bt.trace_records(out / "trace.bin") if x["kind"] == "request" and x.get("resubmitted")]
    assert len(resubmitted) == 1 and resubmitted[0]["op"] == "write" and resubmitted[0]["status"] == "ok"
    assert bt.processes_mentioning(str(out)) == []
