"""`blkrig crash` end to end on a real guest: the scenarios of scenarios/crash/
recorded on blkrig-device, every state built from the write log, checked by
fsck on the host and, for each epoch's flush state, by a guest boot that
mounts it and reads the promised files (docs/crash.md).

- ext4 (journal, data=ordered), write+fsync and rename-over, torn writes
  too: over 100 states, every one consistent, the flush states mounted by
  the guest.
- vfat: some states fail; each failing state is named with a command that
  rebuilds it, and that command fails again on the same state.
- a wrong promise (a file never fsync'd, declared durable) fails, named."""

import json
import shlex
import subprocess
from pathlib import Path

import pytest

import blkrig_test as bt

pytestmark = pytest.mark.skipif(not bt.have_kernel(), reason="default kernel not fetched: run ci/setup")

CRASH = bt.REPO / "scenarios" / "crash"


def crash(*args, timeout=900):
    return subprocess.run([str(bt.blkrig()), "crash", *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ext4(tmp_path_factory):
    out = tmp_path_factory.mktemp("crash") / "ext4"
    r = crash(CRASH / "ext4-fsync.toml", "--out", out, "--jobs", 2)
    return out, r


def test_ext4_every_state_is_consistent(ext4):
    out, r = ext4
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    rep = json.loads((out / "crash.json").read_text())
    assert rep["complete"] is True and rep["filesystem"] == "ext4"
    assert rep["states_checked"] >= 100, rep["states_checked"]
    assert rep["states_checked"] == rep["states_selected"] == len(rep["states"])
    assert rep["inconsistent"] == 0
    # Every state was fsck'd clean, and every promise due there held.
    for s in rep["states"]:
        assert s["fsck"]["verdict"] == "clean", s
        assert all(p["held"] for p in s["promises"]), s
    # [crash.check] torn = true: after each in-order prefix, the next write torn after its first sector and after half.
    torn = [s for s in rep["states"] if s["kind"] == "torn"]
    assert torn and all(0 < s["torn"]["sectors_written"] < s["torn"]["sectors"] for s in torn), torn[:3]
    # The promise rules bite: a.bin is durable in the last state, old-or-new in the first.
    first, last = rep["states"][0], rep["states"][-1]
    assert [p["due"] for p in first["promises"]] == [False, False, False]
    assert [p["due"] for p in last["promises"]] == [True, True, True]
    # [crash.check] boot = "flushes": one guest boot per epoch, each mounting the state and reading the three files.
    booted = [s for s in rep["states"] if "guest" in s]
    assert len(booted) == rep["epochs"], (len(booted), rep["epochs"])
    assert all(s["kind"] == "flush" for s in booted)
    for s in booted:
        assert s["guest"]["booted"] and s["guest"]["mount"] == "ok", s["guest"]
        assert [p["guest"] for p in s["promises"]] == ["held"] * 3, s
    assert f"{rep['states_checked']} checked: {rep['states_checked']} consistent, 0 not" in r.stdout


def test_ext4_wrong_promise_fails_and_is_named(ext4, tmp_path):
    """c.bin is written at step 9 and never fsync'd: declaring it durable
    after step 9 must break in the states before the umount's flush."""
    out, r = ext4
    assert (out / "record" / "write-log.bin").exists(), r.stderr[-2000:]
    wrong = tmp_path / "wrong.toml"
    wrong.write_text((CRASH / "ext4-fsync.toml").read_text() +
                     '\n[[crash.promise]]\npath = "/mnt/c.bin"\ndurable_after_step = 9\n')
    w = crash(wrong, "--record-from", out / "record", "--states", "flushes", "--boot", "none", "--out", tmp_path / "w")
    assert w.returncode == 1, f"exit {w.returncode}\n{w.stdout[-3000:]}\n{w.stderr[-2000:]}"
    rep = json.loads((tmp_path / "w" / "crash.json").read_text())
    bad = [s for s in rep["states"] if not s["consistent"]]
    assert bad, "a promise on a file never fsync'd held in every state"
    for s in bad:
        broken = [p["path"] for p in s["promises"] if not p["held"]]
        assert broken == ["/mnt/c.bin"], s
        assert s["fsck"]["verdict"] == "clean", "the filesystem itself is fine: only the promise is wrong"
    assert "promise /mnt/c.bin: durable since step 9" in w.stdout, w.stdout[-3000:]


def test_vfat_failing_states_are_named_and_reproduce(tmp_path):
    out = tmp_path / "vfat"
    r = crash(CRASH / "vfat-fsync.toml", "--out", out, "--jobs", 2)
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    rep = json.loads((out / "crash.json").read_text())
    assert rep["complete"] is True and rep["filesystem"] == "vfat"
    bad = [s for s in rep["states"] if not s["consistent"]]
    assert 0 < len(bad) < rep["states_checked"], (len(bad), rep["states_checked"])
    for s in bad:
        assert s["reproduce"].startswith("blkrig crash ") and f"--only {s['state']}" in s["reproduce"]
        assert f"state {s['state']} (epoch {s['epoch']}" in r.stdout
    # The first failing state, and the first failing one a guest booted on, each rebuilt by its
    # own command: the same verdict, and its disk kept for a look.
    again_for = [bad[0]] + [s for s in bad if "guest" in s][:1]
    for first in again_for:
        cmd = shlex.split(first["reproduce"])
        again = subprocess.run([str(bt.blkrig()), *cmd[1:]], capture_output=True, text=True, timeout=600)
        assert again.returncode == 1, f"state {first['state']}: exit {again.returncode}\n{again.stdout[-2000:]}\n{again.stderr[-2000:]}"
        state_dir = Path(cmd[cmd.index("--out") + 1])
        one = json.loads((state_dir / "crash.json").read_text())["states"][0]
        assert one["state"] == first["state"] and one["kept_entries"] == first["kept_entries"]
        assert one["fsck"]["verdict"] == first["fsck"]["verdict"]
        assert ("guest" in one) == ("guest" in first)
        assert (state_dir / "disk.img").exists()
        if first["fsck"]["verdict"] == "errors":
            assert subprocess.run(["fsck.vfat", "-n", str(state_dir / "disk.img")], capture_output=True).returncode != 0
    # The flush states were booted; a guest's verdict is part of the state's.
    booted = [s for s in rep["states"] if "guest" in s]
    assert booted and all(s["kind"] == "flush" for s in booted)
    assert all(s["guest"]["booted"] for s in booted), [s["guest"] for s in booted]
