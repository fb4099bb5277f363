"""`blkrig run` over a matrix of scenarios x kernels: every cell runs in its
own folder, the JUnit file reads back through junitparser with a testcase per
cell and a property per check, the exit code is the worst of the runs, build
work is shared through the cache, bad input stops everything before a boot,
and Ctrl-C leaves nothing running."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import blkrig_test as bt

SCEN = bt.REPO / "scenarios"
K1, K2 = "debian-bookworm-cloud", "debian-trixie-cloud"

pytestmark = pytest.mark.skipif(not (bt.have_kernel(K1) and bt.have_kernel(K2)), reason="kernels not fetched: run ci/setup")


def blkrig_run(*args, env=None, timeout=900):
    return subprocess.run([str(bt.blkrig()), "run", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def case_properties(case):
    """A testcase's <properties> (junitparser reads them on suites only)."""
    return {p.get("name"): p.get("value") for p in case._elem.iter("property")}


FAILING = """
[scenario]
name = "fails-on-purpose"
[disk]
fs = "vfat"
size = "16M"
[[disk.files]]
path = "/f.bin"
size = "64K"
[[steps]]
op = "mount"
[[steps]]
op = "read"
path = "/mnt/f.bin"
expect = { ret = 0, bytes = "64K" }
[[expect]]
step = 1
max_request_bytes = 512
"""


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Two scenarios and one that must be skipped, on two kernels, two at a time."""
    base = tmp_path_factory.mktemp("matrix")
    scen = base / "scenarios"
    scen.mkdir()
    for name in ["read-contiguous.toml", "write-fsync.toml", "after-power-cut.toml"]:
        (scen / name).write_text((SCEN / name).read_text())
    cache = base / "cache"
    r = blkrig_run(scen, "--kernel", K1, "--kernel", K2, "--jobs", "2", "--junit", base / "out.xml", "--out", base / "runs",
                   env={"BLKRIG_BUILD_CACHE": str(cache)})
    return base, r


def test_matrix_runs_every_cell_and_junit_reads_back(matrix):
    junitparser = pytest.importorskip("junitparser")
    base, r = matrix
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    xml = junitparser.JUnitXml.fromfile(str(base / "out.xml"))
    cases = [c for suite in xml for c in suite]
    assert len(cases) == 6, [c.name for c in cases]
    by_name = {c.name: c for c in cases}
    for scen in ["read-contiguous", "write-fsync"]:
        for k in [K1, K2]:
            case = by_name[f"{scen} on {k}"]
            assert case.is_passed, case.result
            props = case_properties(case)
            run_dir = Path(props["run_dir"])
            assert run_dir == base / "runs" / scen / k
            verdict = json.loads((run_dir / "verdict.json").read_text())
            assert verdict["outcome"] == "pass" and verdict["kernel"] == k
            checks = {n: v for n, v in props.items() if n.startswith("check: ")}
            # Each step's expectations and each [[expect]] is a named check.
            assert len(checks) == len(verdict["steps"]) + len(verdict["expect"]), checks
            assert all(v == "pass" for v in checks.values()), checks
            assert int(props["requests"]) == verdict["device_trace"]["requests"] > 0
    for k in [K1, K2]:
        case = by_name[f"after-power-cut on {k}"]
        assert case.is_skipped and "disk-from" in case.result[0].message
    # The summary table names every cell with its verdict.
    for scen in ["read-contiguous", "write-fsync"]:
        assert sum(1 for line in r.stdout.splitlines() if line.startswith(scen) and " pass " in line) == 2, r.stdout
    assert "6 runs: 4 passed, 0 failed, 0 errors, 2 skipped" in r.stdout
    # The index links every run's own report, with its verdict.
    index = (base / "runs" / "index.html").read_text()
    for scen in ["read-contiguous", "write-fsync"]:
        for k in [K1, K2]:
            assert f'href="{scen}/{k}/report.html"' in index, index
            assert (base / "runs" / scen / k / "report.html").is_file()
    assert index.count(">pass<") == 4 and index.count(">skipped<") == 2
    # Not a terminal: one line per finished run.
    assert sum(1 for line in r.stderr.splitlines() if line.startswith("blkrig: [")) == 4, r.stderr


def test_matrix_builds_each_disk_once(matrix):
    base, _ = matrix
    # A scenario's disk is the same on both kernels: built once, copied once.
    hows = {(s, k): json.loads((base / "runs" / s / k / "verdict.json").read_text())["build_cache"]
            for s in ["read-contiguous", "write-fsync"] for k in [K1, K2]}
    for s in ["read-contiguous", "write-fsync"]:
        assert sorted(hows[(s, K1)]["disk"] + hows[(s, K2)]["disk"]) == sorted("built" + "hit"), hows
    # Both scenarios are vfat, so on one kernel they share an initramfs (their
    # steps travel beside it): built once per kernel, whose modules differ.
    for k in [K1, K2]:
        assert sorted(hows[(s, k)]["initramfs"] for s in ["read-contiguous", "write-fsync"]) == ["built", "hit"], hows
    assert len(list((base / "cache" / "initramfs").glob("*/initrd.cpio"))) == 2
    disks = list((base / "cache" / "disk").glob("*/disk.img"))
    assert len(disks) == 2
    # Every run has its own copy of the disk (the device writes to it).
    a, b = base / "runs" / "write-fsync" / K1 / "disk.img", base / "runs" / "write-fsync" / K2 / "disk.img"
    assert a.stat().st_ino != b.stat().st_ino


def test_second_matrix_builds_nothing_and_agrees(matrix, tmp_path):
    base, _ = matrix
    r = blkrig_run(SCEN / "write-fsync.toml", "--kernel", K1, "--junit", tmp_path / "again.xml", "--out", tmp_path / "runs", "--quiet",
                   env={"BLKRIG_BUILD_CACHE": str(base / "cache")})
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "blkrig: [" not in r.stderr  # --quiet
    v = json.loads((tmp_path / "runs" / "write-fsync" / K1 / "verdict.json").read_text())
    assert v["build_cache"] == {"disk": "hit", "initramfs": "hit"}
    # Served from the cache, the run sees the same device requests as the first.
    first = json.loads((base / "runs" / "write-fsync" / K1 / "verdict.json").read_text())
    assert v["device_trace"]["ops"].keys() == first["device_trace"]["ops"].keys()


def test_worst_exit_code_and_failure_message(tmp_path):
    junitparser = pytest.importorskip("junitparser")
    (tmp_path / "fails.toml").write_text(FAILING)
    r = blkrig_run(SCEN / "read-contiguous.toml", tmp_path / "fails.toml", "--kernel", K1, "--junit", tmp_path / "o.xml",
                   "--out", tmp_path / "runs")
    assert r.returncode == 1, f"{r.stdout}\n{r.stderr}"
    cases = {c.name: c for suite in junitparser.JUnitXml.fromfile(str(tmp_path / "o.xml")) for c in suite}
    assert cases[f"read-contiguous on {K1}"].is_passed
    bad = cases[f"fails-on-purpose on {K1}"]
    assert not bad.is_passed and bad.result[0].__class__.__name__ == "Failure"
    assert "max_request_bytes" in bad.result[0].message and "fails.toml:" in bad.result[0].message, bad.result[0].message


@pytest.mark.parametrize("args, words", [
    (["'does-not-exist-*.toml'"], "matches no file"),
    ([str(SCEN / "read-contiguous.toml"), "--kernel", "no-such-kernel"], "no-such-kernel"),
    ([str(SCEN / "read-contiguous.toml"), str(SCEN / "write-fsync.toml"), "--control", "/tmp/x.sock"], "--control is for one run"),
])
def test_bad_input_is_exit_2_before_anything_runs(tmp_path, args, words):
    args = [a.strip("'") for a in args]
    r = blkrig_run(*args, "--kernel", K1, "--out", tmp_path / "runs") if "--kernel" not in args else blkrig_run(*args, "--out", tmp_path / "runs")
    assert r.returncode == 2, f"{r.stdout}\n{r.stderr}"
    assert words in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_scenario_in_a_matrix_is_exit_2(tmp_path):
    (tmp_path / "broken.toml").write_text("[disk]\nfs = \"zfs\"\n")
    r = blkrig_run(SCEN / "read-contiguous.toml", tmp_path / "broken.toml", "--kernel", K1, "--out", tmp_path / "runs")
    assert r.returncode == 2 and "broken.toml:2" in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_stops_every_run(tmp_path):
    junitparser = pytest.importorskip("junitparser")
    out = tmp_path / "runs"
    p = subprocess.Popen([str(bt.blkrig()), "run", str(SCEN / "read-contiguous.toml"), str(SCEN / "write-fsync.toml"),
                          str(SCEN / "read-eio.toml"), "--kernel", K1, "--jobs", "2", "--out", str(out), "--junit", str(tmp_path / "i.xml")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until both guests are up (their consoles exist, no verdict yet), then interrupt.
    def running():
        return [c for c in out.glob("*/*/console.log") if not (c.parent / "verdict.json").exists()]
    deadline = time.time() + 300
    while time.time() < deadline and len(running()) < 2:
        time.sleep(0.05)
    assert len(running()) == 2
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, f"{stdout}\n{stderr}"
    assert bt.processes_mentioning(str(out)) == []
    cases = [c for suite in junitparser.JUnitXml.fromfile(str(tmp_path / "i.xml")) for c in suite]
    # The two running when interrupted did not pass (a fast run may have passed before them).
    assert len(cases) == 3 and sum(not c.is_passed for c in cases) >= 2, [(c.name, c.result) for c in cases]
    assert "interrupted" in stdout
    # Each started run still wrote its verdict (one may have passed before the signal), and the matrix read it.
    verdicts = [json.loads(v.read_text()) for v in out.glob("*/*/verdict.json")]
    stopped = [v for v in verdicts if v["outcome"] != "pass"]
    assert len(verdicts) >= 2 and stopped, verdicts
    assert all(v["outcome"] == "interrupted" and v["exit_code"] == 130 for v in stopped), stopped
    assert stdout.count("interrupted by signal 15") == len(stopped), stdout


def test_matrix_through_libvirt(tmp_path):
    """The matrix with the libvirt launcher: each run its own embedded driver root, two at once."""
    if not bt.have("virsh"):
        pytest.skip("libvirt not installed: run ci/setup")
    r = blkrig_run(SCEN / "read-contiguous.toml", SCEN / "write-fsync.toml", "--kernel", K1, "--jobs", "2", "--launcher", "libvirt",
                   "--out", tmp_path / "runs")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    for scen in ["read-contiguous", "write-fsync"]:
        boot = json.loads((tmp_path / "runs" / scen / K1 / "boot.json").read_text())
        assert boot["launcher"] == "libvirt", boot
    assert bt.processes_mentioning(str(tmp_path / "runs")) == []
