"""Fault paths through a guest on the default kernel, from two boots of one
scenario: a failing FLUSH under fsync(), `prob=`/`seed=` rules over a
deterministic request stream, and rules replayed into a new run. The first
run takes its rules from the scenario's [[faults]] and has its device's live
rules saved over the control socket (`blkrig fault ... save`); the second
runs the same scenario without [[faults]], with the saved file as
`blkrig run --faults FILE`, and must fault the same requests the same way."""

import json
import os
import subprocess
import threading
import time

import pytest

import blkrig_test as bt

pytestmark = pytest.mark.skipif(not bt.have_kernel(), reason="default kernel not fetched: run ci/setup")

FILE_SIZE = 1024 * 1024
BS = 4096

STEPS = '''
[[steps]]
op = "mount"

[[steps]]
op = "read"
path = "/mnt/p.bin"
direct = true
bs = "4K"
expect = { ret = 0, bytes = "1M", sha256 = "file" }

[[steps]]
op = "read"
path = "/mnt/q.bin"
direct = true
bs = "4K"
expect = { ret = 0, bytes = "1M", sha256 = "file" }

[[steps]]
op = "open"
path = "/mnt/w.bin"
fd = "w"
access = "w"

[[steps]]
op = "write"
fd = "w"
length = "64K"
seed = 5

[[steps]]
op = "fsync"
fd = "w"
expect = { ret = -1, errno = "EIO" }

[[steps]]
op = "fsync"
fd = "w"
expect = { ret = -1, errno = "EIO" }

[[steps]]
op = "fsync"
fd = "w"

[[steps]]
op = "close"
fd = "w"
'''

FAULTS = '''
# O_DIRECT reads of 4 KiB, one at a time: each file's reads are the same
# stream of 256 requests, so the rule's k-th draw is always the k-th 4 KiB.
[[faults]]
rule = "delay=1ms op=read prob=0.3 seed=7"
file = "/p.bin"

[[faults]]
rule = "delay=1ms op=read prob=0.3 seed=8"
file = "/q.bin"

# Every FLUSH fails until the last fsync begins.
[[faults]]
rule = "ioerr op=flush"
until_step = 7
'''


def scenario(with_faults):
    files = "".join(f'''
[[disk.files]]
path = "/{name}"
size = "{size}"
content = "{content}"
seed = {seed}
''' for name, size, content, seed in [("p.bin", "1M", "random", 1), ("q.bin", "1M", "random", 2), ("w.bin", "64K", "zero", 3)])
    return f'''[scenario]
name = "fault-replay"

[disk]
fs = "vfat"
size = "64M"

[device]
write_cache = true   # flushes are only sent to a volatile cache
''' + files + (FAULTS if with_faults else "") + STEPS


def blkrig_run(scenario_file, out, *args):
    return subprocess.run([str(bt.blkrig()), "run", str(scenario_file), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The first run (rules from [[faults]], saved while it runs) and the replay (rules from --faults)."""
    import blkrig_model as bm
    d = tmp_path_factory.mktemp("replay")
    first_sc, replay_sc = d / "fault-replay.toml", d / "fault-replay-bare.toml"
    first_sc.write_text(scenario(True))
    replay_sc.write_text(scenario(False))
    ctl = f"/tmp/blkrig-test-replay-{os.getpid()}.sock"
    saved = d / "saved.jsonl"
    save_result = {}

    def save_while_it_runs():
        # The device's socket appears when it starts; the rules are all there from then on.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not save_result:
            if os.path.exists(ctl):
                r = subprocess.run([str(bt.blkrig()), "fault", "--control", ctl, "save", str(saved)], capture_output=True, text=True,
                                   timeout=30)
                if r.returncode == 0:
                    save_result["ok"] = True
                    return
            time.sleep(0.2)

    saver = threading.Thread(target=save_while_it_runs)
    saver.start()
    try:
        first = blkrig_run(first_sc, d / "first", "--control", ctl)
    finally:
        save_result.setdefault("ok", False)
        saver.join()
    assert first.returncode == 0, first.stdout + first.stderr
    assert save_result["ok"] and saved.exists(), "the live rules were never saved"
    replay = blkrig_run(replay_sc, d / "replay", "--faults", str(saved))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    return {"dir": d, "saved": saved, "first": bm.load_run(str(d / "first")), "replay": bm.load_run(str(d / "replay")),
            "first_dir": d / "first", "replay_dir": d / "replay"}


def faulted(run):
    """What each rule did, by request identity: (rule, action, op, sector, sectors, status)."""
    return [(q.fault_rule, q.fault_action, q.op, q.sector, q.sectors, q.status) for q in run.requests() if q.fault_action]


def delayed_offsets(run, path):
    return sorted(q.file_offset for q in run.file_requests(path, op="read") if q.fault_action == "delay")


def test_a_failing_flush_fails_fsync_each_time_it_is_sent(runs):
    run = runs["first"]
    fsyncs = [s for s in run.steps if s.op == "fsync"]
    assert [(s.ret, s.error) for s in fsyncs] == [(-1, "EIO"), (-1, "EIO"), (0, "")]
    for s in fsyncs:
        flushes = run.requests(step=s.index, op="flush")
        assert flushes, f"step {s.index} fsync sent no FLUSH"
        if s.ret == -1:
            # The device failed each of them, and the trace says which rule did.
            assert all(q.status == "ioerr" and q.fault_rule == 3 and q.fault_action == "ioerr" for q in flushes), flushes
        else:
            assert all(q.status == "ok" and not q.fault_action for q in flushes), flushes
    # The data itself was written fine: only the flushes failed.
    writes = run.file_requests("/mnt/w.bin", op="write")
    assert writes and all(q.status == "ok" and not q.fault_action for q in writes)
    assert not [q for q in run.requests(op="flush") if q.step is not None and q.step < fsyncs[0].index], "a FLUSH before the first fsync"


def test_the_same_seed_faults_the_same_requests_another_seed_others(runs):
    first, replay = runs["first"], runs["replay"]
    for run in (first, replay):
        for path in ("/mnt/p.bin", "/mnt/q.bin"):
            reads = run.file_requests(path, op="read")
            # The premise: one 4 KiB request per read() at each offset, in order.
            assert [q.file_offset for q in reads] == list(range(0, FILE_SIZE, BS)), f"{path}: the read stream is not 256 x 4 KiB"
    p, q = delayed_offsets(first, "/mnt/p.bin"), delayed_offsets(first, "/mnt/q.bin")
    assert 0 < len(p) < FILE_SIZE // BS and 0 < len(q) < FILE_SIZE // BS, "prob=0.3 fired on none or all of the reads"
    assert p != q, "seeds 7 and 8 delayed the same reads"
    assert delayed_offsets(replay, "/mnt/p.bin") == p, "seed 7 delayed other reads in the second run"
    assert delayed_offsets(replay, "/mnt/q.bin") == q, "seed 8 delayed other reads in the second run"


def test_saved_rules_replayed_with_faults_file_fire_the_same_way(runs):
    saved = [json.loads(l)["params"]["rule"] for l in runs["saved"].read_text().splitlines()]
    # The run armed its scenario's rules as step 0 began: the saved text says so, and the replay arms them alike.
    assert len(saved) == 3 and all(" after_marker=0" in r for r in saved), saved
    assert saved[2].startswith("ioerr op=flush after_marker=0 until_marker="), saved
    first, replay = runs["first"], runs["replay"]
    # Same disk from the same spec: the sectors mean the same file bytes in both runs.
    assert first.files == replay.files and all(first.extents(f) == replay.extents(f) for f in first.files)
    assert [(s.op, s.ret, s.error, s.bytes) for s in replay.steps] == [(s.op, s.ret, s.error, s.bytes) for s in first.steps]
    assert faulted(replay) == faulted(first), "the replayed rules faulted other requests"
    assert (runs["replay_dir"] / "fault-rules").read_text() == runs["saved"].read_text()
    boot = json.loads((runs["replay_dir"] / "boot.json").read_text())
    assert "--fault" not in boot["device_args"], "the replay run had rules besides its --faults file"
