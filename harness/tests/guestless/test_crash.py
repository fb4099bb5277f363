"""`blkrig crash` on records made by hand, no guest: a real vfat image from
mkfs.vfat as the disk before the run and a dm-log-writes file written here.
A write over the first FAT gives a state fsck.vfat rejects, named
with a command that rebuilds it; bad records and bad arguments are exit 2
with what and where (docs/crash.md)."""

import html
import json
import re
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

import blkrig_test as bt
from blkrig_test import browser

MAGIC = 0x6a736677736872
FLUSH, MARK = 1, 8

SCENARIO = """
[scenario]
name = "crash-by-hand"
[disk]
fs = "vfat"
size = "16M"
[[steps]]
op = "mount"
[[steps]]
op = "write"
path = "/mnt/n.bin"
length = "8K"
seed = 3
[[steps]]
op = "fsync"
path = "/mnt/n.bin"
"""


def entry(sector=0, nr=0, flags=0, data=b"", mark=b""):
    head = struct.pack("<QQQQ", sector, nr, flags, len(mark)) + mark
    return head.ljust(512, b"\0") + data


def write_log(path: Path, entries: list[bytes]):
    sb = struct.pack("<QQQI", MAGIC, 1, len(entries), 512).ljust(512, b"\0")
    path.write_bytes(sb + b"".join(entries))


def record(tmp: Path, entries: list[bytes]) -> Path:
    rec = tmp / "record"
    rec.mkdir()
    bt.make_vfat(rec / "disk-before.img", 16, {})
    (rec / "extents.json").write_text("{}")
    write_log(rec / "write-log.bin", entries)
    return rec


def crash(tmp: Path, rec: Path, *args, scenario=SCENARIO):
    scen = tmp / "scen.toml"
    if not scen.exists():
        scen.write_text(scenario)
    return subprocess.run([str(bt.blkrig()), "crash", str(scen), "--record-from", str(rec), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def markers(*ns):
    return [entry(flags=MARK, mark=f"blkrig marker {n}".encode()) for n in ns]


@pytest.mark.skipif(not bt.have("fsck.vfat") or not bt.have("mcopy"), reason="dosfstools/mtools missing: run ci/setup")
def test_a_write_over_the_fat_is_a_failing_state_with_a_command_that_rebuilds_it(tmp_path):
    # A flush with nothing before it ends no epoch; then one write, never flushed, over the first FAT.
    rec = record(tmp_path, markers(0, 1, 2, 3, 4, 5) + [entry(flags=FLUSH), entry(4, 1, 0, b"\x55" * 512)])
    r = crash(tmp_path, rec, "--out", tmp_path / "out", "--states", "all")
    assert r.returncode == 1, r.stdout + r.stderr
    rep = json.loads((tmp_path / "out" / "crash.json").read_text())
    assert rep["complete"] and rep["states_checked"] == 2 and rep["inconsistent"] == 1, rep
    good, bad = rep["states"]
    assert good["consistent"] and good["kept"] == 0
    assert not bad["consistent"] and bad["kept"] == 1 and bad["fsck"]["verdict"] == "errors"
    assert "FATs differ" in bad["fsck"]["output"]
    assert "reproduce" in bad and "--only 1" in bad["reproduce"]
    assert "state 1" in r.stdout and "reproduce: " in r.stdout
    # The reproduce line, run as printed, keeps the state's disk; fsck.vfat still rejects it.
    cmd = bad["reproduce"].split()
    assert cmd[0] == "blkrig"
    again = subprocess.run([str(bt.blkrig()), *cmd[1:]], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1, again.stdout + again.stderr
    disk = Path(cmd[cmd.index("--out") + 1]) / "disk.img"
    assert disk.is_file() and (disk.parent / "extents.json").is_file()
    assert subprocess.run(["fsck.vfat", "-n", str(disk)], capture_output=True).returncode != 0
    assert not (tmp_path / "out" / "work").exists(), "scratch disks are removed"


def test_a_record_without_writes_is_refused(tmp_path):
    rec = record(tmp_path, markers(0, 1) + [entry(flags=FLUSH)])
    r = crash(tmp_path, rec, "--out", tmp_path / "out")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "wrote nothing" in r.stdout + r.stderr


def test_a_write_log_cut_short_is_refused(tmp_path):
    rec = record(tmp_path, markers(0) + [entry(0, 1, 0, b"\1" * 512)])
    log = rec / "write-log.bin"
    log.write_bytes(log.read_bytes()[:-100])
    r = crash(tmp_path, rec, "--out", tmp_path / "out")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cut short" in r.stdout + r.stderr and "past the end" in r.stdout + r.stderr


def test_a_log_that_is_not_dm_log_writes_is_named_by_offset(tmp_path):
    rec = record(tmp_path, [])
    (rec / "write-log.bin").write_bytes(b"x" * 1024)
    r = crash(tmp_path, rec, "--out", tmp_path / "out")
    assert r.returncode == 2 and "offset 0" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_promise_on_a_file_the_steps_never_write_is_a_scenario_error(tmp_path):
    rec = record(tmp_path, markers(0) + [entry(0, 1, 0, b"\1" * 512)])
    bad = SCENARIO + '[[crash.promise]]\npath = "/mnt/other.bin"\ndurable_after_step = 2\n'
    r = crash(tmp_path, rec, "--out", tmp_path / "out", scenario=bad)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "/mnt/other.bin" in r.stderr and "no write step" in r.stderr and "scen.toml:" in r.stderr


@pytest.mark.parametrize("extra,says", [
    ('[crash.check]\nboot = "some"\n', "crash.check.boot = 'some'"),
    ('[crash.check]\nwhen = "always"\n', "when"),
    ('[[steps]]\nop = "rename"\npath = "/mnt/n.bin"\nto = "/mnt/m.bin"\n'
     '[[crash.promise]]\npath = "/mnt/n.bin"\ndurable_after_step = 2\n', "renames it away"),
    ('[[steps]]\nop = "rename"\npath = "/mnt/n.bin"\n', "needs to ="),
    ('[[steps]]\nop = "rename"\npath = "/mnt/n.bin"\nto = "/etc/passwd"\n', "outside the mount"),
])
def test_bad_crash_tables_and_renames_are_scenario_errors(tmp_path, extra, says):
    rec = record(tmp_path, markers(0) + [entry(0, 1, 0, b"\1" * 512)])
    r = crash(tmp_path, rec, "--out", tmp_path / "out", scenario=SCENARIO + extra)
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and "scen.toml:" in r.stderr, r.stderr


def test_a_rename_onto_a_promised_file_is_followed(tmp_path):
    """n.tmp written, then renamed over n.bin: a promise on n.bin is
    accepted (its content comes from the rename), not refused for lacking
    a write step."""
    rec = record(tmp_path, markers(0, 1) + [entry(0, 1, 0, b"\1" * 512), entry(flags=FLUSH)])
    scen = SCENARIO.replace("/mnt/n.bin", "/mnt/n.tmp") + (
        '[[steps]]\nop = "rename"\npath = "/mnt/n.tmp"\nto = "/mnt/n.bin"\n'
        '[[crash.promise]]\npath = "/mnt/n.bin"\ndurable_after_step = 3\n')
    r = crash(tmp_path, rec, "--out", tmp_path / "out", scenario=scen)
    # The log holds no marker after step 3: the run did not get that far, which is the rig's exit 3 -- not a scenario error.
    assert r.returncode == 3 and "no marker after step 3" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("args,says", [
    (["--states", "some"], "random:N"),
    (["--states", "random:0"], "random:N"),
    (["--jobs", "0"], "--jobs"),
    (["--boot", "sometimes"], "--boot"),
])
def test_bad_arguments_are_exit_2(tmp_path, args, says):
    rec = record(tmp_path, markers(0) + [entry(0, 1, 0, b"\1" * 512)])
    r = crash(tmp_path, rec, "--out", tmp_path / "out", *args)
    assert r.returncode == 2 and says in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_scenario_whose_steps_write_nothing_is_refused_before_recording(tmp_path):
    scen = tmp_path / "scen.toml"
    scen.write_text(SCENARIO.split("[[steps]]\nop = \"write\"")[0])
    r = subprocess.run([str(bt.blkrig()), "crash", str(scen), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no step writes" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "out" / "record").exists(), "nothing is recorded for it"


def test_record_from_a_folder_without_a_write_log_is_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = crash(tmp_path, tmp_path / "empty", "--out", tmp_path / "out")
    assert r.returncode == 2 and "no write-log.bin" in r.stderr, r.stdout + r.stderr


@pytest.mark.skipif(not bt.have("fsck.vfat") or not bt.have("mcopy"), reason="dosfstools/mtools missing: run ci/setup")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_run_never_looks_finished(tmp_path, sig):
    """Twelve writes in one epoch are 4,096 subsets, each fsck'd: stopped
    midway by Ctrl-C (exit 130) or killed outright, crash.json says the
    run is not complete, and no crash.txt claims a result."""
    writes = [entry(2000 + 8 * i, 1, 0, bytes([i + 1]) * 512) for i in range(12)]
    rec = record(tmp_path, markers(0, 1, 2) + writes)
    scen = tmp_path / "scen.toml"
    scen.write_text(SCENARIO)
    out = tmp_path / "out"
    p = subprocess.Popen([str(bt.blkrig()), "crash", str(scen), "--record-from", str(rec), "--out", str(out), "--jobs", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "crash.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    rep = json.loads((out / "crash.json").read_text())
    assert rep["complete"] is False, rep
    if sig == signal.SIGINT:
        assert p.returncode == 130, stdout + stderr
        assert 0 < rep["states_checked"] < rep["states_selected"], {k: rep[k] for k in rep if k != "states"}
        assert "interrupted" in (out / "crash.txt").read_text()
    else:
        assert rep["status"] == "running" and not (out / "crash.txt").exists()
    # Nothing it started outlives it (an fsck in flight ends within moments).
    def naming(path):  # processes whose command line names path
        found = []
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and str(path).encode() in (d / "cmdline").read_bytes():
                    found.append(d.name)
            except OSError:
                pass
        return found

    for _ in range(100):
        left = naming(out)
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"processes left running on {out}: {left}"


@pytest.mark.skipif(not bt.have("fsck.vfat") or not bt.have("mcopy"), reason="dosfstools/mtools missing: run ci/setup")
@pytest.mark.skipif(not browser.available(), reason=f"{browser.BROWSER} not installed: run ci/setup")
def test_the_crash_page_shows_the_failing_state_in_a_browser(tmp_path):
    """crash.html, opened in headless Chromium: the verdict, the failing
    state with its reproduce command, a red square for it and a green one
    for the good state; `blkrig report` on the folder writes the same page."""
    rec = record(tmp_path, markers(0, 1, 2, 3, 4, 5) + [entry(flags=FLUSH), entry(4, 1, 0, b"\x55" * 512)])
    out = tmp_path / "out"
    r = crash(tmp_path, rec, "--out", out)
    assert r.returncode == 1, r.stdout + r.stderr
    page = out / "crash.html"
    assert f"the page: {page}" in r.stdout
    rep = json.loads((out / "crash.json").read_text())
    bad = next(s for s in rep["states"] if not s["consistent"])
    assert "FATs differ" in bad["why"]
    loaded = browser.load(page)
    assert not loaded.console, loaded.console
    assert re.search(r'id="verdict"[^>]*>1 of 2 states inconsistent<', loaded.dom), loaded.dom[:2000]
    assert bad["reproduce"] in html.unescape(loaded.dom) and "FATs differ" in loaded.dom
    img = browser.screenshot(page, tmp_path / "crash.png")
    assert img.count("#dc2626") >= 50 and img.count("#16a34a") >= 50, "no red square for the failing state, or no green one for the good"
    page.unlink()
    again = subprocess.run([str(bt.blkrig()), "report", str(out)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and str(page) in again.stdout and page.exists(), again.stdout + again.stderr
