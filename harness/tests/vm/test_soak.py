"""Soak, short: bench/soak's guest fio runs (two here; twenty by hand,
docs/reliability.md), each verify-clean and without a stall. And what
catches a stall if one ever happens: a step whose read the device holds
forever is ended by the step timeout, the run says so, and nothing it
started is left running."""

import json
import os
import subprocess
import sys
import time

import pytest

import blkrig_test as bt

pytestmark = pytest.mark.skipif(not bt.have_kernel(), reason="default kernel not fetched: run ci/setup")


def test_two_fio_runs_in_a_row_verify_clean(tmp_path):
    if not bt.have("fio"):
        pytest.skip("fio is not installed (ci/setup installs it)")
    out = tmp_path / "soak"
    env = dict(os.environ, BLKRIG_BUILD_DIR=str(bt.build_dir()))
    r = subprocess.run([sys.executable, str(bt.REPO / "bench" / "soak"), "--runs", "2", "--out", str(out), "--json"],
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["ok"] == 2 and res["stalled"] == 0
    for run in res["runs"]:
        assert run["outcome"] == "ok" and run["errors"] == 0, run
        assert run["verify_read_ios"] == 4096, run
        # Every write and every verify read reached the device, beside the guest's own requests.
        assert run["requests"] >= 8192, run
    assert not bt.processes_mentioning(str(out)), "a process of the soak is still running"


STALL = """
[scenario]
name = "stall"
description = "a read the device holds and nobody releases"

[disk]
fs = "vfat"
size = "16M"

[[disk.files]]
path = "/f.bin"
size = "256K"
content = "random"
seed = 3

[[faults]]
rule = "hold op=read"
file = "/f.bin"

[guest]
step_timeout = 5

[[steps]]
op = "mount"

[[steps]]
op = "read"
path = "/mnt/f.bin"
direct = true

[[steps]]
op = "umount"
"""


def test_a_stalled_step_is_ended_by_the_step_timeout(tmp_path):
    scen = tmp_path / "stall.toml"
    scen.write_text(STALL)
    out = tmp_path / "run"
    t0 = time.monotonic()
    r = subprocess.run([str(bt.blkrig()), "run", str(scen), "--out", str(out)], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - t0
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert elapsed < 120, f"the run took {elapsed:.0f} s: the step timeout (5 s) did not end the stall"
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["outcome"] == "fail", verdict
    steps = verdict["steps"]
    assert steps[0]["ok"] and not steps[1]["ok"], steps
    assert any("step 1 timed out after 5 s" in p for p in verdict["problems"]), verdict["problems"]
    # The held read was on the device when the guest powered off.
    recs = bt.trace_records(out / "trace.bin")
    held = [x for x in recs if x["kind"] == "request" and x.get("fault", {}).get("action") == "hold"]
    assert held, "no request was held: the stall was not the device's"
    assert recs[-1]["kind"] == "end"
    assert not bt.processes_mentioning(str(out)), "a process of the run is still running"
