"""`blkrig run --launcher libvirt`: the same scenarios through libvirt's
embedded QEMU driver as through the direct launcher give the same verdict,
the same guest hardware and the same device requests; an unreachable URI
or a domain libvirt cannot start is exit 3 and leaves nothing behind; two
runs on two embedded roots at once (two "hosts") both pass."""

import glob
import grp
import gzip
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import blkrig_test as bt
from blkrig_test.plugin import to_toml

SCEN = bt.REPO / "scenarios"


def _libvirt_ready() -> str:
    try:
        pwd.getpwnam("libvirt-qemu")
        grp.getgrnam("libvirt-qemu")
    except KeyError:
        return "no libvirt-qemu user and group (libvirt's QEMU driver needs them): run ci/setup"
    if not Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so").exists():
        return "libvirt's QEMU driver is not installed: run ci/setup"
    return ""


pytestmark = [pytest.mark.skipif(not bt.have_kernel(), reason="default kernel not fetched: run ci/setup"),
              pytest.mark.skipif(bool(_libvirt_ready()), reason=_libvirt_ready() or "ready")]

# Two queues on a 64-entry ring: the hardware the guest sees must follow the
# scenario through libvirt as well.
MQ = {
    "scenario": {"name": "libvirt-multiqueue"},
    "disk": {"fs": "vfat", "size": "64M", "files": [{"path": "/a.bin", "size": "1M", "seed": 1}]},
    "device": {"num_queues": 2, "queue_size": 64},
    "guest": {"scheduler": "none", "nomerges": 2},
    "steps": [
        {"op": "mount", "cpu": 0},
        {"op": "drop_caches"},
        {"op": "read", "path": "/mnt/a.bin", "cpu": 1, "expect": {"sha256": "file"}},
        {"op": "umount", "cpu": 0},
    ],
}


def blkrig_run(scenario, out, *args, timeout=600):
    return subprocess.run([str(bt.blkrig()), "run", str(scenario), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=timeout)


def requests(out):
    """The device's requests and markers in seq order: (op, sector, sectors,
    queue), ("marker", index)."""
    recs = sorted((r for r in bt.trace_records(out / "trace.bin") if r["kind"] in ("request", "marker")), key=lambda r: r["seq"])
    return [(r["op"], r["sector"], r["bytes"] // 512, r["queue"]) if r["kind"] == "request" else ("marker", r["index"])
            for r in recs]


def merged(ranges):
    out = []
    for lo, n in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], lo + n)
        else:
            out.append([lo, lo + n])
    return [tuple(r) for r in out]


def canonical(reqs):
    """Per stretch between markers: every read and flush as it came, in order
    (op, sector, sectors); the writes as the sectors they covered. How
    writeback splits a file's dirty pages into requests depends on when its
    flusher runs against fsync, and differs between two direct runs too."""
    stretches, cur = [], {"ops": [], "written": []}
    for r in reqs:
        if r[0] == "marker":
            stretches.append((r[1], cur["ops"], merged(cur["written"])))
            cur = {"ops": [], "written": []}
        elif r[0] == "write":
            cur["written"].append((r[1], r[2]))
        else:
            cur["ops"].append(r[:3])
    stretches.append(("end", cur["ops"], merged(cur["written"])))
    return stretches


def verdict(out):
    v = json.loads((out / "verdict.json").read_text())
    return v["outcome"], [(s["index"], s["op"], s.get("ok")) for s in v["steps"]]


def knobs(out):
    return json.loads((out / "guest-knobs.json").read_text())


def boot_json(out):
    return json.loads((out / "boot.json").read_text())


def rig_temp_dirs():
    return set(glob.glob("/tmp/blkrig-*"))


def left_behind(before):
    """/tmp/blkrig-* folders made since before that no live process uses
    (another run's socket folder is named on its device's command line)."""
    return sorted(d for d in rig_temp_dirs() - before if os.path.isdir(d) and not bt.processes_mentioning(d))


def scenario_path(tmp_path_factory, name):
    if name == "multiqueue":
        p = tmp_path_factory.mktemp("scenario") / "multiqueue.toml"
        p.write_text(to_toml(MQ))
        return p
    return SCEN / f"{name}.toml"


@pytest.fixture(scope="module", params=["read-contiguous", "write-fsync", "multiqueue"])
def pair(request, tmp_path_factory):
    """One scenario through both launchers."""
    scen = scenario_path(tmp_path_factory, request.param)
    base = tmp_path_factory.mktemp(request.param)
    outs = {}
    for launcher in ("qemu", "libvirt"):
        out = base / launcher
        # Both boots check the extents in the guest: the requests before
        # step 0 are compared too, and a check kept from an earlier boot
        # (run/extent_memo.hpp) would leave them out of one run only.
        r = blkrig_run(scen, out, "--launcher", launcher, "--fresh-extent-check")
        assert r.returncode == 0, f"{launcher}: blkrig run exited {r.returncode}, run folder {out}\n{r.stdout}\n{r.stderr}"
        assert not bt.processes_mentioning(str(out)), f"{launcher}: processes outlived the run: {bt.processes_mentioning(str(out))}"
        outs[launcher] = out
    return request.param, outs


def test_same_verdict(pair):
    name, outs = pair
    assert verdict(outs["qemu"]) == verdict(outs["libvirt"])
    assert verdict(outs["libvirt"])[0] == "pass"


def test_same_device_requests(pair):
    name, outs = pair
    direct, lv = requests(outs["qemu"]), requests(outs["libvirt"])
    assert any(r[0] != "marker" for r in direct), "the direct run's trace has no requests"
    if name == "read-contiguous":
        # Nothing but reads and the mount's writes: the very same list.
        assert [r[:3] for r in direct] == [r[:3] for r in lv]
    a, b = canonical(direct), canonical(lv)
    for x, y in zip(a, b):
        assert x == y, f"{name}: the requests before marker {x[0]} differ\n direct:  {x}\n libvirt: {y}"
    assert len(a) == len(b)
    if name == "multiqueue":
        # The read step ran on CPU 1: queue 1, through both launchers. (Where
        # the unpinned rest lands is the guest's scheduling.)
        step = next(i for i, st in enumerate(MQ["steps"]) if st["op"] == "read")
        for reqs in (direct, lv):
            lo, hi = reqs.index(("marker", 2 * step)), reqs.index(("marker", 2 * step + 1))
            queues = {r[3] for r in reqs[lo + 1:hi]}
            assert queues == {1}, f"the CPU 1 read went to queues {queues}"


def test_same_guest_hardware(pair):
    """Queue count, ring size, segment and block limits, CPUs: every knob the
    guest read back is the same through both launchers."""
    name, outs = pair
    assert knobs(outs["qemu"]) == knobs(outs["libvirt"])
    b = boot_json(outs["libvirt"])
    assert b["launcher"] == "libvirt" and b["libvirt_uri"].startswith("qemu:///embed?root=/tmp/blkrig-")
    assert b["stop_reason"] == "shutdown" and not b["destroyed"]
    assert boot_json(outs["qemu"])["launcher"] == "qemu"
    # blkrig's own launcher puts the guest's memory on a huge-page tmpfs where
    # it may mount one (libvirt's is a memfd): the requests above are the
    # same either way.
    assert boot_json(outs["qemu"])["guest_memory"]["backend"] == ("tmpfs-huge" if os.geteuid() == 0 else "memfd")
    xml = (outs["libvirt"] / "domain.xml").read_text()
    assert "<disk type='vhostuser' device='disk'>" in xml and "<source type='memfd'/>" in xml
    if name == "multiqueue":
        assert b["num_queues"] == 2 and b["cpus"] == 2 and b["queue_size"] == 64
        assert "queues='2' queue_size='64'" in xml
        assert '"num-queues":2,"queue-size":64' in (outs["libvirt"] / "qemu.log").read_text()


@pytest.mark.parametrize("uri", ["test+unix:///nonexistent", "qemu+unix:///system?socket=/nonexistent/virtqemud-sock"])
def test_unreachable_uri_is_exit_3_and_leaves_nothing(tmp_path, uri):
    before = rig_temp_dirs()
    out = tmp_path / "run"
    r = blkrig_run(SCEN / "read-contiguous.toml", out, "--launcher", "libvirt", "--libvirt-uri", uri, timeout=300)
    assert r.returncode == 3, f"{r.stdout}\n{r.stderr}"
    assert f"cannot connect to libvirt at {uri}: " in r.stderr, r.stderr
    b = boot_json(out)
    assert b["outcome"] == "libvirt_failed" and b["libvirt_uri"] == uri
    assert not bt.processes_mentioning(str(out)), bt.processes_mentioning(str(out))
    assert not left_behind(before), f"left behind: {left_behind(before)}"


def test_domain_libvirt_cannot_start_is_exit_3(tmp_path):
    """A kernel QEMU cannot load: libvirt's message, the device stopped,
    nothing left."""
    kernel = tmp_path / "not-a-kernel"
    kernel.write_bytes(bt.seeded_bytes(64 << 10, 7))
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(gzip.compress(b""))
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    out = tmp_path / "run"
    before = rig_temp_dirs()
    r = subprocess.run([str(bt.blkrig()), "boot", "--kernel", str(kernel), "--initrd", str(initrd), "--disk", str(disk), "--out",
                        str(out), "--launcher", "libvirt", "--timeout", "60"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, f"{r.stdout}\n{r.stderr}"
    assert "did not start the domain" in r.stderr and "linux kernel too old to load a ram disk" in r.stderr, r.stderr
    b = boot_json(out)
    assert b["outcome"] == "libvirt_failed" and b["device_exit"] == "exited with 0"
    assert not bt.processes_mentioning(str(out)), bt.processes_mentioning(str(out))
    assert not left_behind(before), f"left behind: {left_behind(before)}"


def test_two_embedded_roots_at_once(tmp_path, pair):
    """Two "hosts": two runs at the same time, each on an embedded driver
    root of its own named in the URI, both pass with the direct run's requests."""
    name, outs = pair
    if name != "read-contiguous":
        pytest.skip("once is enough")
    # Short roots: libvirt's monitor sockets live under them.
    roots = [Path(tempfile.mkdtemp(prefix="lvroot-", dir="/tmp")) for _ in range(2)]
    try:
        procs = []
        for i, root in enumerate(roots):
            out = tmp_path / f"host{i}"
            procs.append((out, subprocess.Popen([str(bt.blkrig()), "run", str(SCEN / "read-contiguous.toml"), "--out", str(out),
                                                 "--launcher", "libvirt", "--libvirt-uri", f"qemu:///embed?root={root}",
                                                 "--fresh-extent-check"],
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        for (out, p), root in zip(procs, roots):
            stdout, stderr = p.communicate(timeout=600)
            assert p.returncode == 0, f"{root}: exited {p.returncode}\n{stdout}\n{stderr}"
            assert boot_json(out)["libvirt_uri"] == f"qemu:///embed?root={root}"
            assert [r[:3] for r in requests(out)] == [r[:3] for r in requests(outs["qemu"])]
            assert (root / "etc" / "qemu.conf").exists(), "the root's qemu.conf was not written"
            assert not bt.processes_mentioning(str(root)), bt.processes_mentioning(str(root))
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("when", ["starting", "running"])
def test_sigkill_of_blkrig_leaves_nothing(tmp_path, when):
    """The embedded driver's QEMU is daemonized and has no autodestroy: the
    run's watcher kills it, and removes the run's temporary folder, when
    blkrig is killed outright, whether the domain was still starting or the
    guest already ran."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched: run ci/setup")
    out = tmp_path / "killed"
    p = subprocess.Popen([str(bt.blkrig()), "run", str(bt.REPO / "scenarios" / "read-contiguous.toml"), "--out", str(out),
                          "--launcher", "libvirt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    initrd = f"-initrd {out}/initrd.cpio"
    if when == "starting":
        while time.time() < deadline and not bt.processes_mentioning(initrd):
            time.sleep(0.05)
    else:
        while time.time() < deadline and "hello" not in ((out / "results.jsonl").read_text() if (out / "results.jsonl").exists() else ""):
            time.sleep(0.1)
    assert bt.processes_mentioning(initrd), "QEMU never started"
    sock_dirs = set()
    if (out / "domain.xml").exists():
        sock_dirs = set(__import__("re").findall(r"/tmp/blkrig-[A-Za-z0-9]+", (out / "domain.xml").read_text()))
    p.kill()
    p.wait()
    deadline = time.time() + 10
    while time.time() < deadline and bt.processes_mentioning(str(out)):
        time.sleep(0.1)
    assert bt.processes_mentioning(str(out)) == []
    for d in sock_dirs:
        assert not os.path.exists(d), d
