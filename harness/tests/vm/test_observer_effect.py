"""The rig must not change what it observes: a scenario's steps see the same
device requests whether or not the rig checks the image's extents first, and
whether or not the guest traces (docs/architecture.md, "Before the steps").

Each case runs one scenario twice, with the extent check on and off, and
compares every request inside the steps (op, sector, length, in seq order).
The ext2-format image has a file that needs an indirect block: the check's
FIEMAP reads that block, and if anything of it survived into the steps the
read step would not read it again. vfat: the check reads the FAT.
"""

import json
import subprocess

import pytest

import blkrig_test as bt

KERNELS = ["debian-bookworm-cloud", "debian-trixie-cloud"]

EXT2 = '''[scenario]
name = "observer-ext2"
extent_check = {check}
[disk]
fs = "ext2"
size = "32M"
block = "4K"
[[disk.files]]
path = "/i.bin"
size = "200K"
content = "random"
seed = 4
[guest]
nomerges = 2
[[steps]]
op = "mount"
[[steps]]
op = "drop_caches"
[[steps]]
op = "read"
path = "/mnt/i.bin"
bs = "200K"
expect = {{ ret = 0, bytes = "200K", sha256 = "file" }}
[[steps]]
op = "umount"
'''

VFAT = '''[scenario]
name = "observer-vfat"
extent_check = {check}
[disk]
fs = "vfat"
size = "64M"
[[disk.files]]
path = "/f.bin"
size = "1M"
content = "random"
seed = 5
layout = "fragmented"
extents = 4
[[steps]]
op = "mount"
[[steps]]
op = "drop_caches"
[[steps]]
op = "read"
path = "/mnt/f.bin"
expect = {{ ret = 0, bytes = "1M", sha256 = "file" }}
[[steps]]
op = "umount"
'''

READ_STEP = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run per (case, kernel, variant), shared by the tests of this module."""
    done = {}

    def get(name, template, kernel, check=True, guest_trace=True):
        key = (name, kernel, check, guest_trace)
        if key not in done:
            tag = f"{name}-{kernel}-{'check' if check else 'nocheck'}{'' if guest_trace else '-notrace'}"
            d = tmp_path_factory.mktemp(tag)
            sc = d / f"{name}.toml"
            sc.write_text(template.format(check="true" if check else "false"))
            out = d / "run"
            args = [] if guest_trace else ["--no-guest-trace"]
            r = subprocess.run([str(bt.blkrig()), "run", str(sc), "--kernel", kernel, "--out", str(out), *args], capture_output=True,
                               text=True, timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
            done[key] = out
        return done[key]

    return get


def step_requests(run_dir):
    """Requests by step (markers 2i and 2i+1 bracket step i), and those before step 0."""
    recs = sorted(bt.trace_records(run_dir / "trace.bin"), key=lambda x: x.get("seq", 0))
    before, steps, step = [], {}, None
    for x in recs:
        if x["kind"] == "marker":
            step = x["index"] // 2 if x["index"] % 2 == 0 else None
            continue
        if x["kind"] != "request":
            continue
        key = (x["op"], x["sector"], x["bytes"])
        if step is None and not steps:
            before.append(key)
        elif step is not None:
            steps.setdefault(step, []).append(key)
    return before, steps


def before_steps(run_dir):
    return json.loads((run_dir / "verdict.json").read_text())["before_steps"]


def indirect_sector(run_dir, path):
    """The 4 KiB block between the file's first 12 blocks and the rest."""
    f = next(f for f in json.loads((run_dir / "extents.json").read_text())["files"] if f["path"] == path)
    e0, e1 = f["extents"][0], f["extents"][1]
    assert e0["sectors"] == 12 * 8, "the image does not have blocks 0-11 in one extent"
    gap = e1["sector"] - (e0["sector"] + e0["sectors"])
    assert gap == 8, f"expected the indirect block between blocks 11 and 12, the extents are {f['extents']}"
    return e0["sector"] + e0["sectors"]


def covers(req, sector):
    op, s, n = req
    return op == "read" and s <= sector < s + n // 512


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name,template,path", [("ext2", EXT2, "/i.bin"), ("vfat", VFAT, "/f.bin")])
def test_the_extent_check_does_not_change_the_steps_requests(runs, kernel, name, template, path):
    if not bt.have_kernel(kernel):
        pytest.skip(f"{kernel} not fetched: run ci/setup")
    on = runs(name, template, kernel, check=True)
    off = runs(name, template, kernel, check=False)

    # The check ran in one and not in the other, and read the disk when it did.
    b_on, b_off = before_steps(on), before_steps(off)
    assert b_on["extent_check"]["error"] == "" and [f["path"] for f in b_on["extent_check"]["files"]] == [path]
    assert b_off["extent_check"] is None
    # Both start step 0 on an empty cache of the disk.
    assert b_on["disk_cache"]["resident_after"] == 0 and b_off["disk_cache"]["resident_after"] == 0
    pre_on, steps_on = step_requests(on)
    pre_off, steps_off = step_requests(off)
    assert len(pre_on) > len(pre_off), "the check read nothing from the device"

    if name == "ext2":
        ind = indirect_sector(on, path)
        assert any(covers(q, ind) for q in pre_on), "the check's FIEMAP did not read the indirect block"
        assert any(covers(q, ind) for q in steps_on[READ_STEP]), "the read step did not read the indirect block with the check on"

    assert steps_on[READ_STEP], "the read step reached no device request"
    assert steps_on[READ_STEP] == steps_off[READ_STEP], "the extent check changed the read step's requests"
    assert steps_on == steps_off, "the extent check changed a step's requests"


@pytest.mark.parametrize("name,template", [("ext2", EXT2), ("vfat", VFAT)])
def test_guest_tracing_does_not_change_the_steps_requests(runs, name, template):
    """The agent's ftrace (block events, the mpage function tracer) on and off."""
    kernel = KERNELS[0]
    if not bt.have_kernel(kernel):
        pytest.skip(f"{kernel} not fetched: run ci/setup")
    traced = runs(name, template, kernel)
    untraced = runs(name, template, kernel, guest_trace=False)
    assert (traced / "guest-events.jsonl").stat().st_size > 0, "the traced run has no guest events"
    assert (untraced / "guest-events.jsonl").stat().st_size == 0, "the untraced run traced something"
    assert step_requests(traced)[1][READ_STEP], "the read step reached no device request"
    assert step_requests(traced)[1] == step_requests(untraced)[1], "guest tracing changed a step's requests"
