"""Nothing of the user's is lost, without a guest: `--out` refuses a folder
blkrig did not write and an earlier run without --force, a symlink in a run
folder is removed as a link and never written through, a second blkrig on a
folder in use is exit 2 naming the holder's pid, inherited file descriptors
do not reach blkrig-device, and a blkrig killed outright leaves no process
and no socket folder after the next run.

The boots here are real `blkrig boot`s with a real blkrig-device; a shell
script stands in for QEMU, so that no guest is needed: it notes that it
started, lists its open files and waits to be stopped."""

import os
import signal
import subprocess
import time
from pathlib import Path

import blkrig_test as bt

SCEN = bt.REPO / "scenarios"

FAKE_QEMU = """#!/bin/sh
# Stands in for QEMU in blkrig boot: its open files, then wait to be stopped.
for f in /proc/$$/fd/*; do readlink "$f"; done > "$FAKE_QEMU_OUT/qemu-fds.txt"
touch "$FAKE_QEMU_OUT/started"
exec sleep 120
"""

# Parses, and fails only in `blkrig run` (its [[expect]] names a step that is
# not there): a run that claims its folder and stops before any disk is built.
BAD_EXPECT = (SCEN / "read-contiguous.toml").read_text() + "\n[[expect]]\nstep = 9\nno_findings = true\n"


def blkrig(*args, **kw):
    return subprocess.run([str(bt.blkrig()), *map(str, args)], capture_output=True, text=True, timeout=120, **kw)


def listing(d: Path) -> dict:
    return {p.name: (os.readlink(p) if p.is_symlink() else p.read_bytes()) for p in d.iterdir()}


def users_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of the user's: a note, and a disk.img symlink to a precious file."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("mine\n")
    target = tmp_path / "precious.bin"
    target.write_bytes(b"precious" * 100)
    (d / "disk.img").symlink_to(target)
    return d, target


def test_run_refuses_a_folder_that_is_not_ours_even_with_force(tmp_path):
    d, target = users_folder(tmp_path)
    before = listing(d)
    for extra in [[], ["--force"]]:
        r = blkrig("run", SCEN / "read-contiguous.toml", "--out", d, *extra)
        assert r.returncode == 2, r.stderr
        assert f"--out {d} is not empty and not a blkrig run folder" in r.stderr, r.stderr
        assert "notes.txt" in r.stderr
    assert listing(d) == before
    assert target.read_bytes() == b"precious" * 100


def test_matrix_and_boot_refuse_it_too(tmp_path):
    d, target = users_folder(tmp_path)
    before = listing(d)
    r = blkrig("run", SCEN / "read-contiguous.toml", SCEN / "write-fsync.toml", "--out", d, "--force")
    assert r.returncode == 2 and "not a blkrig run folder" in r.stderr, r.stderr
    kernel, initrd, disk = tmp_path / "k", tmp_path / "i", tmp_path / "d"
    for f in (kernel, initrd, disk):
        f.write_bytes(b"\0" * 4096)
    r = blkrig("boot", "--kernel", kernel, "--initrd", initrd, "--disk", disk, "--out", d)
    assert r.returncode == 2 and "not a blkrig run folder" in r.stderr, r.stderr
    assert listing(d) == before
    assert target.read_bytes() == b"precious" * 100


def test_earlier_run_folder_is_replaced_only_with_force_and_links_are_removed_not_followed(tmp_path):
    scen = tmp_path / "bad-expect.toml"
    scen.write_text(BAD_EXPECT)
    out = tmp_path / "run"
    r = blkrig("run", scen, "--out", out)
    assert r.returncode == 2 and "expect.step 9" in r.stderr, r.stderr
    assert json_kind(out) == "run"
    # Later, the folder holds an earlier run's files and a symlink.
    (out / "verdict.json").write_text("{}")
    target = tmp_path / "precious.bin"
    target.write_bytes(b"precious")
    (out / "disk.img").symlink_to(target)
    r = blkrig("run", scen, "--out", out)
    assert r.returncode == 2, r.stderr
    assert "holds an earlier blkrig run" in r.stderr and "--force" in r.stderr, r.stderr
    assert (out / "verdict.json").exists() and (out / "disk.img").is_symlink()
    r = blkrig("run", scen, "--out", out, "--force")
    assert r.returncode == 2 and "expect.step 9" in r.stderr, r.stderr  # it got past the folder
    assert not (out / "verdict.json").exists()
    assert not (out / "disk.img").is_symlink() and not (out / "disk.img").exists()
    assert target.read_bytes() == b"precious"


def json_kind(d: Path) -> str:
    import json
    return json.loads((d / ".blkrig-run").read_text())["kind"]


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


def running(pid: int) -> bool:
    """Alive and not a zombie: a killed child waits as a zombie until whoever adopted it reaps it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def open_files(pid: int) -> list[str]:
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.append(os.readlink(fd))
        except OSError:
            pass
    return out


def start_boot(tmp_path: Path, out: Path, pass_fds=()):
    """`blkrig boot` on a real blkrig-device with the stand-in QEMU; returns once both run."""
    qemu = tmp_path / "fake-qemu"
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(0o755)
    kernel, initrd, disk = tmp_path / "vmlinuz", tmp_path / "initrd", tmp_path / "disk.raw"
    kernel.write_bytes(b"\0" * 4096)
    initrd.write_bytes(b"\0" * 4096)
    disk.write_bytes(b"\0" * (1 << 20))
    env = {**os.environ, "FAKE_QEMU_OUT": str(tmp_path)}
    p = subprocess.Popen([str(bt.blkrig()), "boot", "--kernel", str(kernel), "--initrd", str(initrd), "--disk", str(disk), "--out",
                          str(out), "--qemu", str(qemu), "--timeout", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, pass_fds=pass_fds)
    deadline = time.time() + 30
    while time.time() < deadline and not (tmp_path / "started").exists() and p.poll() is None:
        time.sleep(0.05)
    assert (tmp_path / "started").exists(), p.communicate(timeout=30)
    return p


def test_second_blkrig_on_a_folder_in_use_names_the_holder_and_inherited_fds_stay_out(tmp_path):
    inherited = tmp_path / "inherited-descriptor"
    fd = os.open(inherited, os.O_RDWR | os.O_CREAT, 0o600)
    out = tmp_path / "run"
    try:
        p = start_boot(tmp_path, out, pass_fds=(fd,))
    finally:
        os.close(fd)
    try:
        assert str(inherited) in open_files(p.pid)  # blkrig itself has it
        kids = children(p.pid)
        device = [k for k in kids if "blkrig-device" in cmdline(k)]
        assert len(device) == 1 and len(kids) == 2, [cmdline(k) for k in kids]
        dev_files = open_files(device[0])
        assert str(inherited) not in dev_files, dev_files
        assert not any(f.endswith(".blkrig-lock") for f in dev_files), dev_files
        qemu_files = (tmp_path / "qemu-fds.txt").read_text().splitlines()
        assert qemu_files and str(inherited) not in qemu_files, qemu_files
        # The same folder, again: refused, naming the pid that holds it.
        scen = tmp_path / "bad-expect.toml"
        scen.write_text(BAD_EXPECT)
        r = blkrig("run", scen, "--out", out, "--force")
        assert r.returncode == 2, r.stderr
        assert f"is in use by another blkrig (pid {p.pid})" in r.stderr, r.stderr
        assert (out / "trace.bin").exists()  # the holder's files are untouched
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert bt.processes_mentioning(str(out)) == []


def owned_temp_folders(pid: int) -> list[Path]:
    found = []
    for owner in Path("/tmp").glob("blkrig-??????/owner"):
        try:
            if owner.read_text().strip() == str(pid):
                found.append(owner.parent)
        except OSError:
            pass
    return found


def test_sigkill_leaves_no_process_and_the_next_run_reaps_the_socket_folder(tmp_path):
    out = tmp_path / "run"
    p = start_boot(tmp_path, out)
    kids = children(p.pid)
    assert len(kids) == 2
    sock_dirs = owned_temp_folders(p.pid)
    assert len(sock_dirs) == 1 and (sock_dirs[0] / "vu.sock").exists(), sock_dirs
    p.kill()
    p.communicate(timeout=30)
    # blkrig-device and "QEMU" die with it (PR_SET_PDEATHSIG).
    deadline = time.time() + 15
    while time.time() < deadline and any(running(k) for k in kids):
        time.sleep(0.05)
    assert not any(running(k) for k in kids), [cmdline(k) for k in kids]
    assert bt.processes_mentioning(str(out)) == []
    assert sock_dirs[0].exists()  # nobody could remove it: blkrig was killed outright
    # The next blkrig run removes it (its owner is gone), whatever becomes of that run.
    scen = tmp_path / "bad-expect.toml"
    scen.write_text(BAD_EXPECT)
    r = blkrig("run", scen, "--out", tmp_path / "next")
    assert r.returncode == 2, r.stderr
    assert not sock_dirs[0].exists()


def test_sigterm_while_building_leaves_an_interrupted_verdict(tmp_path):
    """Stopped before any guest: the verdict still says so, and check and report say it was interrupted."""
    import json
    out = tmp_path / "run"
    env = {**os.environ, "BLKRIG_BUILD_CACHE": "off"}  # a real mkfs to interrupt, not a cache hit
    p = subprocess.Popen([str(bt.blkrig()), "run", str(SCEN / "read-contiguous.toml"), "--out", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "disk-spec.json").exists():
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, f"{stdout}\n{stderr}"
    v = json.loads((out / "verdict.json").read_text())
    assert v["outcome"] == "interrupted" and v["exit_code"] == 130 and v["interrupted"]["signal"] == 15, v
    assert v["interrupted"]["phase"] in ("building the disk", "building the initramfs"), v["interrupted"]
    assert v["device_trace"] is None and not any(s["ran"] for s in v["steps"]), v
    assert f"interrupted by signal 15 (Terminated) while {v['interrupted']['phase']}" in stderr, stderr
    assert bt.processes_mentioning(str(out)) == []
    r = blkrig("check", out)
    assert r.returncode == 2 and "the run was interrupted by signal 15" in r.stderr, r.stderr
    r = blkrig("report", out)
    assert r.returncode == 2 and "the run was interrupted by signal 15" in r.stderr and "not a run folder" not in r.stderr, r.stderr
