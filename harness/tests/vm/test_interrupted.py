"""An interrupted `blkrig run`, on a real guest: while the steps run, QEMU
and blkrig-device hold no descriptor blkrig inherited, a second run on the
same folder is refused naming the first's pid, and SIGINT still leaves
verdict.json (outcome interrupted, exit 130, the steps done, the device trace
so far), which `blkrig check` and `blkrig report` then report as such."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import blkrig_test as bt
import pytest

SCEN = bt.REPO / "scenarios" / "read-contiguous.toml"

pytestmark = pytest.mark.skipif(not bt.have_kernel(), reason="debian-bookworm-cloud is not fetched (blkrig kernel fetch)")


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def open_files(pid: int) -> list[str]:
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.append(os.readlink(fd))
        except OSError:
            pass
    return out


def name_of(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_sigint_mid_run_leaves_an_interrupted_verdict(tmp_path):
    # read-contiguous with a last step that outlasts the test's checks, so
    # the signal finds the run mid-way however fast the first four went.
    scen = tmp_path / "held.toml"
    scen.write_text(SCEN.read_text() + '\n[[steps]]\nop = "sleep"\nms = 50000\n')
    out = tmp_path / "run"
    inherited = tmp_path / "inherited-descriptor"
    fd = os.open(inherited, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        p = subprocess.Popen([str(bt.blkrig()), "run", str(scen), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, pass_fds=(fd,))
    finally:
        os.close(fd)
    try:
        # Until the guest has finished a step.
        deadline = time.time() + 300
        results = out / "results.jsonl"
        while time.time() < deadline and p.poll() is None and '"type":"step"' not in (results.read_text() if results.exists() else ""):
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()
        kids = children(p.pid)
        names = sorted(name_of(k) for k in kids)
        assert names == ["blkrig-device", "qemu-system-x86"], names
        for k in kids:
            assert str(inherited) not in open_files(k), (name_of(k), open_files(k))
        r = subprocess.run([str(bt.blkrig()), "run", str(scen), "--out", str(out), "--force"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and f"in use by another blkrig (pid {p.pid})" in r.stderr, r.stderr
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, f"{stdout}\n{stderr}"
    assert "interrupted by signal 2" in stderr, stderr
    v = json.loads((out / "verdict.json").read_text())
    assert v["outcome"] == "interrupted" and v["exit_code"] == 130, v
    done = v["interrupted"]["steps_done"]
    assert 1 <= done <= 4 and v["interrupted"]["steps"] == 5, v["interrupted"]
    assert [s["ran"] for s in v["steps"]] == [True] * done + [False] * (5 - done), v["steps"]
    assert v["device_trace"]["requests"] > 0, v["device_trace"]
    assert bt.processes_mentioning(str(out)) == []

    r = subprocess.run([str(bt.blkrig()), "check", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "the run was interrupted by signal 2" in r.stderr and "not written by" not in r.stderr, r.stderr
    # The report draws what there was, marked as interrupted.
    r = subprocess.run([str(bt.blkrig()), "report", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    page = (out / "report.html").read_text()
    assert '"outcome":"interrupted"' in page.replace(" ", ""), page[:2000]
