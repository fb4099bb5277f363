"""The rig must not change what it observes: a scenario's steps see the same
device requests whether or not the rig checks the image's extents first, and
whether or not the guest traces (docs/architecture.md, "Before the steps").

Each case runs one scenario twice, with the extent check on and off, and
compares the requests inside the steps: the read step's op, sector, length
and order; the other steps' requests as sets (see same_requests).
The ext2-format image has a file that needs an indirect block: the check's
FIEMAP reads that block, and if anything of it survived into the steps the
read step would not read it again. vfat: the check reads the FAT.
"""

import json
import subprocess

import pytest

import blkrig_test as bt

KERNELS = ["debian-bookworm-cloud", "debian-trixie-cloud"]

# Steps 0..3 of both scenarios: mount, drop_caches, a read of the whole file, umount.
STEPS = '''[[steps]]
op = "mount"
[[steps]]
op = "drop_caches"
[[steps]]
op = "read"
path = "/mnt{path}"
bs = "{size}"
expect = {{{{ ret = 0, bytes = "{size}", sha256 = "file" }}}}
[[steps]]
op = "umount"
'''

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
''' + STEPS.format(path="/i.bin", size="200K")

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
''' + STEPS.format(path="/f.bin", size="1M")

READ_STEP = 2

# The same ext2 scenario with a FIEMAP as a step of its own after the mount:
# what the rig used to do. The control that shows the comparison can fail.
EXT2_FIEMAP_STEP = EXT2.replace('[[steps]]\nop = "drop_caches"', '[[steps]]\nop = "fiemap"\npath = "/mnt/i.bin"\n[[steps]]\nop = "drop_caches"')


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
            # The check itself, in the guest, not a record an earlier boot kept.
            args = (["--fresh-extent-check"] if check else []) + ([] if guest_trace else ["--no-guest-trace"])
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


def same_requests(a, b):
    """The read step in order; every other step as a multiset. A sync or
    umount writes from two tasks at once (the flusher's inode writeback and
    the superblock from the umount itself), so their order races by nature
    and is not the rig's doing."""
    assert a[READ_STEP], "the read step reached no device request"
    assert a[READ_STEP] == b[READ_STEP], "the read step's requests differ (op, sector, length, order)"
    assert a.keys() == b.keys(), "the steps that reached the device differ"
    for i in a:
        assert sorted(a[i]) == sorted(b[i]), f"step {i}'s requests differ"


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
@pytest.mark.parametrize("name,template,path", [("ext2", EXT2, "/i.bin"), ("vfat", VFAT, "/f.bin")], ids=["ext2", "vfat"])
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
    # The agent's expedited RCU for its set-up is undone before step 0.
    for b in (b_on, b_off):
        assert b["rcu_expedited"] == {"before": "0", "after": "0"}, b["rcu_expedited"]
    pre_on, steps_on = step_requests(on)
    pre_off, steps_off = step_requests(off)
    assert len(pre_on) > len(pre_off), "the check read nothing from the device"

    if name == "ext2":
        ind = indirect_sector(on, path)
        assert any(covers(q, ind) for q in pre_on), "the check's FIEMAP did not read the indirect block"
        assert any(covers(q, ind) for q in steps_on[READ_STEP]), "the read step did not read the indirect block with the check on"

    same_requests(steps_on, steps_off)


@pytest.mark.parametrize("name,template", [("ext2", EXT2), ("vfat", VFAT)], ids=["ext2", "vfat"])
def test_guest_tracing_does_not_change_the_steps_requests(runs, name, template):
    """The agent's ftrace (block events, the mpage function tracer) on and off."""
    kernel = KERNELS[0]
    if not bt.have_kernel(kernel):
        pytest.skip(f"{kernel} not fetched: run ci/setup")
    traced = runs(name, template, kernel)
    untraced = runs(name, template, kernel, guest_trace=False)
    assert (traced / "guest-events.jsonl").stat().st_size > 0, "the traced run has no guest events"
    assert (untraced / "guest-events.jsonl").stat().st_size == 0, "the untraced run traced something"
    same_requests(step_requests(traced)[1], step_requests(untraced)[1])


def test_a_fiemap_among_the_steps_does_change_the_read(runs):
    """The control: the FIEMAP the rig used to insert after the first mount,
    now as a scenario step, keeps the indirect block's mapping cached past
    drop_caches on 6.1, so the read step no longer reads that block. The
    comparison above would fail on such a rig."""
    kernel = KERNELS[0]
    if not bt.have_kernel(kernel):
        pytest.skip(f"{kernel} not fetched: run ci/setup")
    plain = runs("ext2", EXT2, kernel, check=False)
    with_fiemap = runs("ext2-fiemap", EXT2_FIEMAP_STEP, kernel, check=False)
    ind = indirect_sector(plain, "/i.bin")
    read_plain = step_requests(plain)[1][READ_STEP]
    read_after_fiemap = step_requests(with_fiemap)[1][READ_STEP + 1]
    assert any(covers(q, ind) for q in read_plain), "without the FIEMAP the read step did not read the indirect block"
    assert not any(covers(q, ind) for q in read_after_fiemap), "after a FIEMAP step the read still read the indirect block"
    assert read_plain != read_after_fiemap
