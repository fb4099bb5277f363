"""Every scenario knob, read back in the guest and seen in the requests.

Four boots on the default kernel, each proving knobs that do not get in
each other's way:
- two queues (so two vCPUs): each pinned read arrives on its CPU's queue and
  the model ties every request to a guest issue from a CPU of that queue;
  read_ahead_kb = 32 caps the readahead window; fsync on a write-back cache
  sends a FLUSH;
- 4096-byte logical blocks and max_sectors_kb = 16: every request is
  4096-aligned, a multiple of 4096 and at most 16 KiB; a write-through
  cache gets no FLUSH on fsync; a 64-entry ring is 64 tags in the guest;
- seg_max = 2 and size_max = 8192 on a read-only device: no request has more
  than two segments or a segment over 8 KiB, a write fails with EROFS and the
  device sees no write; bfq, a module, is carried in the initramfs and used;
- knobs the guest kernel cannot apply: the run is exit 3 naming each."""

import json
import subprocess

import pytest

import blkrig_test as bt
from blkrig_test.plugin import load_model, to_toml

pytestmark = pytest.mark.skipif(not bt.have_kernel(), reason="default kernel not fetched: run ci/setup")

KIB = 1024


def run(doc, out, *args):
    out.parent.mkdir(parents=True, exist_ok=True)
    toml = out.parent / f"{out.name}.toml"
    toml.write_text(to_toml(doc))
    return subprocess.run([str(bt.blkrig()), "run", str(toml), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=600)


def booted(tmp_path_factory, name, doc, code=0):
    out = tmp_path_factory.mktemp(name) / "run"
    r = run(doc, out)
    assert r.returncode == code, f"blkrig run exited {r.returncode} (expected {code}), run folder {out}\n{r.stdout}\n{r.stderr}"
    return out, r


def knobs(out):
    return {k["knob"]: k for k in json.loads((out / "guest-knobs.json").read_text())["knobs"]}


def verdict(out):
    return json.loads((out / "verdict.json").read_text())


def step_index(doc, name):
    """The scenario index of the step whose path ends with name (or op == name)."""
    return next(i for i, s in enumerate(doc["steps"]) if s.get("path", "").endswith(name) or s["op"] == name)


def data_requests(m):
    return [r for r in m.requests() if r.op in ("read", "write")]


# ---------------------------------------------------------------- two queues

MQ = {
    "scenario": {"name": "knobs-multiqueue"},
    "disk": {"fs": "vfat", "size": "64M",
             "files": [{"path": "/a.bin", "size": "1M", "seed": 1}, {"path": "/b.bin", "size": "1M", "seed": 2}]},
    "device": {"num_queues": 2},
    "guest": {"scheduler": "none", "nomerges": 2, "read_ahead_kb": 32, "rq_affinity": 2, "mount_options": "noatime"},
    "steps": [
        {"op": "mount", "cpu": 0},
        {"op": "drop_caches"},
        {"op": "read", "path": "/mnt/a.bin", "cpu": 0, "expect": {"sha256": "file"}},
        {"op": "read", "path": "/mnt/b.bin", "cpu": 1, "expect": {"sha256": "file"}},
        {"op": "write", "path": "/mnt/w.bin", "length": "64K", "cpu": 1},
        {"op": "fsync", "path": "/mnt/w.bin", "cpu": 1},
    ],
}


@pytest.fixture(scope="module")
def mq(tmp_path_factory):
    out, _ = booted(tmp_path_factory, "mq", MQ)
    return out, load_model(out)


def test_two_queues_give_two_cpus_each_mapped_to_a_queue(mq):
    out, m = mq
    boot = json.loads((out / "boot.json").read_text())
    assert boot["num_queues"] == 2 and boot["cpus"] == 2
    k = knobs(out)
    assert k["device.num_queues"]["applied"], k["device.num_queues"]
    assert json.loads((out / "guest-knobs.json").read_text())["cpus_online"] == "0-1"
    assert m.queue_of_cpu == [0, 1], f"the guest's CPU → queue map: {m.queue_of_cpu}"


def test_every_queue_carries_the_requests_of_its_cpu(mq):
    out, m = mq
    for path, cpu in (("a.bin", 0), ("b.bin", 1)):
        st = step_index(MQ, path)
        reqs = m.file_requests(f"/mnt/{path}", step=st, op="read")
        assert reqs, f"no reads of {path} in step {st}"
        queues = {r.queue for r in reqs}
        assert queues == {cpu}, f"the read pinned to CPU {cpu} arrived on queues {queues}"
    by_queue = {q: [r for r in data_requests(m) if r.queue == q] for q in (0, 1)}
    assert all(by_queue.values()), f"requests per queue: { {q: len(v) for q, v in by_queue.items()} }"


def test_correlation_agrees_on_the_queue_of_every_request(mq):
    out, m = mq
    assert not m.findings, "\n".join(m.findings)
    in_steps = [r for r in data_requests(m) if r.step is not None]
    unmatched = [r.seq for r in in_steps if r.guest_cpu is None]
    assert in_steps and not unmatched, f"device requests in steps with no guest issue: seqs {unmatched[:10]}"
    matched = [r for r in m.requests() if r.guest_cpu is not None]
    wrong = [(r.seq, r.queue, r.guest_cpu) for r in matched if m.queue_of_cpu[r.guest_cpu] != r.queue]
    assert not wrong, f"(seq, queue, guest CPU) on another queue than their CPU's: {wrong[:10]}"
    assert {r.guest_cpu for r in matched} == {0, 1}


def test_read_ahead_kb_is_the_readahead_window(mq):
    out, m = mq
    assert knobs(out)["guest.read_ahead_kb"]["found"] == "32"
    sizes = [r.bytes for r in m.file_requests("/mnt/a.bin", step=step_index(MQ, "a.bin"), op="read")]
    # nomerges=2: each readahead bio is a request, so none is longer than the window (the default, 128 KiB, would be).
    assert max(sizes) == 32 * KIB, f"read sizes {sorted(set(sizes))}"


def test_fsync_on_a_write_back_cache_flushes(mq):
    out, m = mq
    assert knobs(out)["device.write_cache"]["found"] == "write back"
    flushes = m.requests(step=step_index(MQ, "fsync"), op="flush")
    assert flushes, "fsync on a write-back cache sent no FLUSH"


def test_the_knobs_are_in_the_verdict_and_mount_options_read_back(mq):
    out, m = mq
    v = verdict(out)
    assert v["knobs"] and all(k["applied"] for k in v["knobs"]), v["knobs"]
    k = knobs(out)
    assert "noatime" in k["guest.mount_options"]["found"].split(",")
    assert k["guest.scheduler"]["found"].startswith("[none]")
    assert k["guest.rq_affinity"]["found"] == "2" and k["guest.nomerges"]["found"] == "2"


# ---------------------------------------------------------------- block size and request size

LIMITS = {
    "scenario": {"name": "knobs-limits"},
    "disk": {"fs": "ext4", "size": "64M", "block": 4096, "files": [{"path": "/f.bin", "size": "1M", "seed": 3}]},
    "device": {"logical_block_size": 4096, "write_cache": False, "queue_size": 64},
    "guest": {"max_sectors_kb": 16, "scheduler": "mq-deadline"},
    "steps": [
        {"op": "mount"},
        {"op": "drop_caches"},
        {"op": "read", "path": "/mnt/f.bin", "expect": {"sha256": "file"}},
        {"op": "write", "path": "/mnt/w.bin", "length": "256K"},
        {"op": "fsync", "path": "/mnt/w.bin"},
    ],
}


@pytest.fixture(scope="module")
def limits(tmp_path_factory):
    out, _ = booted(tmp_path_factory, "limits", LIMITS)
    return out, load_model(out)


def test_logical_block_size_4096_aligns_every_request(limits):
    out, m = limits
    assert knobs(out)["device.logical_block_size"]["found"] == "4096"
    reqs = data_requests(m)
    assert reqs
    odd = [(r.seq, r.sector, r.bytes) for r in reqs if r.sector % 8 or r.bytes % 4096]
    assert not odd, f"(seq, sector, bytes) not 4096-aligned: {odd[:10]}"


def test_max_sectors_kb_caps_every_request(limits):
    out, m = limits
    assert knobs(out)["guest.max_sectors_kb"]["found"] == "16"
    reqs = data_requests(m)
    big = [(r.seq, r.bytes) for r in reqs if r.bytes > 16 * KIB]
    assert not big, f"requests over 16 KiB: {big[:10]}"
    # The cap is what limits them: the 1 MiB read has requests right at it.
    st = step_index(LIMITS, "f.bin")
    assert max(r.bytes for r in m.file_requests("/mnt/f.bin", step=st, op="read")) == 16 * KIB


def test_write_through_cache_gets_no_flush(limits):
    out, m = limits
    assert knobs(out)["device.write_cache"]["found"] == "write through"
    writes = m.requests(step=step_index(LIMITS, "fsync"), op="write")
    assert writes, "the fsync wrote nothing"
    flushes = [r.seq for r in m.requests() if r.op == "flush"]
    assert not flushes, f"FLUSH requests reached a write-through device: seqs {flushes[:10]}"


def test_queue_size_is_the_guests_queue_depth(limits):
    out, m = limits
    k = knobs(out)
    assert k["device.queue_size"]["applied"] and k["device.queue_size"]["found"] == "64", k["device.queue_size"]
    assert k["guest.scheduler"]["found"].startswith("[mq-deadline]")


# ---------------------------------------------------------------- segments, read-only

SEGS = {
    "scenario": {"name": "knobs-segments-ro"},
    "disk": {"fs": "vfat", "size": "64M", "files": [{"path": "/f.bin", "size": "1M", "seed": 4}]},
    "device": {"seg_max": 2, "size_max": 8192, "read_only": True},
    "guest": {"scheduler": "bfq", "nomerges": 2, "mount_options": "ro"},
    "steps": [
        {"op": "mount"},
        {"op": "drop_caches"},
        {"op": "read", "path": "/mnt/f.bin", "expect": {"sha256": "file"}},
        {"op": "write", "path": "/mnt/new.bin", "length": "4K", "expect": {"ret": -1, "errno": "EROFS"}},
    ],
}


@pytest.fixture(scope="module")
def segs(tmp_path_factory):
    out, _ = booted(tmp_path_factory, "segs", SEGS)
    return out, load_model(out)


def test_seg_max_and_size_max_cap_segments(segs):
    out, m = segs
    k = knobs(out)
    assert k["device.seg_max"]["found"] == "2" and k["device.size_max"]["found"] == "8192"
    reqs = data_requests(m)
    assert reqs
    many = [(r.seq, r.nsegs) for r in reqs if r.nsegs > 2]
    assert not many, f"requests with more than seg_max 2 segments: {many[:10]}"
    long = [(r.seq, r.seg_lens) for r in reqs if any(s > 8192 for s in r.seg_lens)]
    assert not long, f"segments over size_max 8192: {long[:10]}"
    sizes = [r.bytes for r in m.file_requests("/mnt/f.bin", step=step_index(SEGS, "f.bin"), op="read")]
    # Readahead would build 128 KiB requests; two segments of at most 8 KiB hold 16 KiB.
    assert max(sizes) <= 16 * KIB and len(sizes) >= (1 << 20) // (16 * KIB), f"read sizes {sorted(set(sizes))}"


def test_a_scheduler_module_goes_into_the_initramfs(segs):
    # bfq is a module in the default kernel: the run carries it, so it applies.
    out, m = segs
    assert "[bfq]" in knobs(out)["guest.scheduler"]["found"].split()
    hello = next(json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if '"hello"' in l)
    assert "bfq" in hello["modules"], hello["modules"]


def test_read_only_device_refuses_the_write_and_sees_none(segs):
    out, m = segs
    assert knobs(out)["device.read_only"]["found"] == "1"
    st = m.step(step_index(SEGS, "new.bin"))
    assert st.ran and not st.ok and st.error == "EROFS", (st.ret, st.error, st.call)
    writes = [r.seq for r in m.requests() if r.op != "read"]
    assert not writes, f"the read-only device saw other requests than reads: {writes[:10]}"


# ---------------------------------------------------------------- a knob not applied

def test_a_knob_the_guest_does_not_apply_is_exit_3_naming_it(tmp_path_factory):
    # noop went with the legacy block layer; max_sectors_kb below a page is
    # refused by the kernel.
    doc = {
        "scenario": {"name": "knobs-not-applied"},
        "disk": {"fs": "vfat", "size": "64M"},
        "guest": {"scheduler": "noop", "max_sectors_kb": 2},
        "steps": [{"op": "mount"}],
    }
    out, r = booted(tmp_path_factory, "notapplied", doc, code=3)
    text = r.stdout + r.stderr
    assert "guest.scheduler = noop was not applied: the guest reads \"[" in text, text
    assert "guest.max_sectors_kb = 2 was not applied" in text and "max_hw_sectors_kb is" in text, text
    v = verdict(out)
    assert v["exit_code"] == 3
    bad = {k["knob"]: k for k in v["knobs"] if not k["applied"]}
    assert set(bad) == {"guest.scheduler", "guest.max_sectors_kb"}, bad
    assert bad["guest.scheduler"]["asked"] == "noop" and bad["guest.scheduler"]["found"].startswith("[mq-deadline]")

