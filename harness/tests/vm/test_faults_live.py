"""Faults that need time or state on the default kernel: a read held until
released over the control socket (with the rule's counters read live), the
crash model's power cut with and without fsync (checked on the surviving
image, in the exported dm-log-writes log, and by booting on the survivors;
drop_random's subset twice with one seed; the powered-off device's IOERRs),
and the data actions torn, corrupt, lie and reorder."""

import hashlib
import json
import os
import struct
import subprocess
import time

import pytest
import xxhash

import blkrig_test as bt

SCEN = bt.REPO / "scenarios"

pytestmark = pytest.mark.skipif(not bt.have_kernel(), reason="default kernel not fetched: run ci/setup")


def run(scenario, out, *args, timeout=600):
    return subprocess.run([str(bt.blkrig()), "run", str(scenario), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=timeout)


def fault_cli(ctl, *args):
    return subprocess.run([str(bt.blkrig()), "fault", "--control", str(ctl), *args], capture_output=True, text=True, timeout=30)


def requests(run_dir):
    return [r for r in bt.trace_records(run_dir / "trace.bin") if r["kind"] == "request"]


def extents(run_dir, path):
    files = json.loads((run_dir / "extents.json").read_text())["files"]
    f = next(f for f in files if f["path"] == path)
    return [(e["sector"], e["sector"] + e["sectors"]) for e in f["extents"]]


def inside(sector, sectors, ranges):
    return any(lo <= sector and sector + sectors <= hi for lo, hi in ranges)


def image_sectors(run_dir, sector, sectors):
    with open(run_dir / "disk.img", "rb") as f:
        f.seek(sector * 512)
        return f.read(sectors * 512)


def step_results(run_dir):
    return [json.loads(l) for l in (run_dir / "results.jsonl").read_text().splitlines() if '"type":"step"' in l]


def read_write_log(path):
    """The dm-log-writes file: (sector, nr_sectors, flags, data or mark text) per entry."""
    raw = path.read_bytes()
    magic, version, nr, sectorsize = struct.unpack_from("<QQQI", raw, 0)
    assert magic == 0x6A736677736872 and version == 1 and sectorsize == 512, "not a dm-log-writes file"
    entries, pos = [], 512
    for _ in range(nr):
        sector, n, flags, data_len = struct.unpack_from("<QQQQ", raw, pos)
        if flags & 8:  # a mark: its text follows the header in the same sector
            entries.append((sector, n, flags, raw[pos + 32:pos + 32 + data_len].decode()))
            pos += 512
        else:
            entries.append((sector, n, flags, raw[pos + 512:pos + 512 + n * 512]))
            pos += 512 + n * 512
    assert pos == len(raw), "the log has bytes after its last entry"
    return entries


def power_cut_scenario(tmp_path, mode, fsync_b=False, seed=0):
    text = (SCEN / "power-cut.toml").read_text()
    if fsync_b:
        text = text.replace('[power_cut]\nafter_step = 3', '[[steps]]\nop = "fsync"\npath = "/mnt/b.bin"\n\n[power_cut]\nafter_step = 4')
    text = text.replace('mode = "drop_all"', f'mode = "{mode}"\nseed = {seed}\nshare = 0.5')
    p = tmp_path / f"power-cut-{mode}{'-fsync' if fsync_b else ''}.toml"
    p.write_text(text)
    return p


def test_held_read_completes_with_the_right_data_once_released(tmp_path):
    ctl = f"/tmp/blkrig-test-held-{os.getpid()}.sock"
    out = tmp_path / "held"
    proc = subprocess.Popen([str(bt.blkrig()), "run", str(SCEN / "read-held.toml"), "--out", str(out), "--control", ctl],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        held = []
        deadline = time.monotonic() + 120
        while not held and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            r = fault_cli(ctl, "held")
            held = r.stdout.splitlines()[1:] if r.returncode == 0 else []
        assert held, f"no request was ever held\n{proc.communicate(timeout=60)}"
        listed = fault_cli(ctl, "list").stdout.splitlines()[1].split()
        assert listed[1:3] == ["1", "1"], f"rule 1 should have matched and fired once: {listed}"
        time.sleep(2)
        assert proc.poll() is None, "the run ended while its read was held"
        seq = int(held[0].split()[0])
        again = fault_cli(ctl, "held").stdout.splitlines()[1].split()
        assert int(again[0]) == seq and int(again[5]) >= 2000, f"the request is not still held: {again}"
        rel = fault_cli(ctl, "release", "--seq", str(seq))
        assert rel.returncode == 0 and "released 1" in rel.stdout, rel.stdout + rel.stderr
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    rec = next(r for r in requests(out) if r["seq"] == seq)
    assert rec.get("fault", {}).get("action") == "hold" and rec["status"] == "ok"
    assert rec["t_complete_ns"] - rec["t_submit_ns"] >= 2_000_000_000, "the held request completed before it was released"
    assert not os.path.exists(ctl), "the control socket was left behind"


@pytest.fixture(scope="module")
def cut_drop_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("cut") / "drop_all"
    r = run(SCEN / "power-cut.toml", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_power_cut_drops_exactly_the_unflushed_writes(cut_drop_all):
    out = cut_drop_all
    report = json.loads((out / "power-cut.json").read_text())
    a, b = extents(out, "/a.bin"), extents(out, "/b.bin")
    assert report["mode"] == "drop_all" and report["kept"] == []
    dropped = report["dropped"]
    assert dropped, "no unflushed write was dropped"
    # Every write of b (never flushed) was lost; nothing of a (fsync'd) was.
    assert not [w for w in dropped if any(lo < w["sector"] + w["sectors"] and w["sector"] < hi for lo, hi in a)]
    b_writes = [w for w in dropped if inside(w["sector"], w["sectors"], b)]
    assert sum(w["sectors"] for w in b_writes) == 512, f"b.bin's 256 KiB of writes were not all dropped: {b_writes}"
    for w in b_writes:
        assert image_sectors(out, w["sector"], w["sectors"]) == bytes(w["sectors"] * 512), f"write seq {w['seq']} survived on disk"
    # a's data is on the disk: it is what the log says was written there.
    log = read_write_log(out / "write-log.bin")
    a_entries = [e for e in log if not e[2] & 8 and e[1] and inside(e[0], e[1], a)]
    assert sum(e[1] for e in a_entries) == 512
    for sector, n, _, data in a_entries:
        assert image_sectors(out, sector, n) == data, f"a.bin's write at sector {sector} did not survive"
    flags = [e[2] for e in log]
    first_flush = flags.index(1)
    assert all(not inside(e[0], e[1], b) for e in log[:first_flush] if e[1]), "b was written before the fsync of a"
    assert any(isinstance(e[3], str) and e[3].startswith("power_cut drop_all") for e in log), "the log has no power-cut mark"


def test_requests_after_the_cut_are_ioerr_marked_power_off(cut_drop_all):
    recs = bt.trace_records(cut_drop_all / "trace.bin")
    # The cut falls on the last step's closing marker; the agent's sync()
    # before power-off then writes b.bin's directory entry (its mtime).
    cut_at = max(m["seq"] for m in recs if m["kind"] == "marker")
    after = [q for q in recs if q["kind"] == "request" and q["seq"] > cut_at]
    assert after, "the guest sent nothing after the power cut"
    for q in after:
        assert q["status"] == "ioerr" and q.get("fault") == {"rule": 0, "action": "power_off"}, f"seq {q['seq']}: {q}"
    assert not [q for q in recs if q["kind"] == "request" and q["seq"] < cut_at and q.get("fault")], "a request before the cut is marked"
    summary = json.loads((cut_drop_all / "verdict.json").read_text())["device_trace"]
    assert (summary["powered_off"], summary["faults"]) == (len(after), 0), summary
    # The run model counts them as fault hits, as [[expect]] faulted_requests_* does.
    import blkrig_model as bm
    hits = bm.load_run(str(cut_drop_all)).fault_hits()
    assert [(h.seq, h.fault_rule, h.fault_action, h.status) for h in hits] == [(q["seq"], 0, "power_off", "ioerr") for q in after]


def test_restart_on_the_survivors(cut_drop_all, tmp_path):
    r = run(SCEN / "after-power-cut.toml", tmp_path / "after", "--disk-from", str(cut_drop_all))
    assert r.returncode == 0, r.stdout + r.stderr


def test_power_cut_keep_all_keeps_every_write(tmp_path):
    out = tmp_path / "keep_all"
    r = run(power_cut_scenario(tmp_path, "keep_all", seed=3), out)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "power-cut.json").read_text())
    log = {e[0]: e[3] for e in read_write_log(out / "write-log.bin") if not e[2] & 8 and e[1]}
    assert report["dropped"] == [] and report["kept"]
    for w in report["kept"]:
        assert image_sectors(out, w["sector"], w["sectors"]) == log[w["sector"]], f"kept write seq {w['seq']} is not on disk"


DROP_RANDOM_SEED = 3


@pytest.fixture(scope="module")
def drop_random_twice(tmp_path_factory):
    """Two runs of the power-cut scenario with drop_random and the same seed."""
    d = tmp_path_factory.mktemp("drop_random")
    sc = power_cut_scenario(d, "drop_random", seed=DROP_RANDOM_SEED)
    outs = []
    for name in ("one", "two"):
        r = run(sc, d / name)
        assert r.returncode == 0, r.stdout + r.stderr
        outs.append(d / name)
    return outs


def unflushed_writes(out):
    """The write-log entries after the last flush, before the power-cut mark: (sector, sectors, data) in arrival order."""
    log = read_write_log(out / "write-log.bin")
    cut = next(i for i, e in enumerate(log) if isinstance(e[3], str) and e[3].startswith("power_cut"))
    last_flush = max(i for i, e in enumerate(log[:cut]) if e[2] & 1)
    return [(e[0], e[1], e[3]) for e in log[last_flush + 1:cut] if not e[2] & 8 and e[1]]


def test_power_cut_drop_random_drops_a_proper_subset_the_same_each_time(drop_random_twice):
    one, two = drop_random_twice
    reports = [json.loads((o / "power-cut.json").read_text()) for o in (one, two)]
    for rep in reports:
        assert rep["mode"] == "drop_random" and rep["seed"] == DROP_RANDOM_SEED and rep["share"] == 0.5
    rep = reports[0]
    written = unflushed_writes(one)
    ident = lambda ws: sorted((w["op"], w["sector"], w["sectors"]) for w in ws)
    # The report accounts for exactly the writes the log has after the last FLUSH.
    assert ident(rep["dropped"] + rep["kept"]) == sorted(("write", s, n) for s, n, _ in written)
    assert rep["dropped"] and rep["kept"], f"drop_random with seed {DROP_RANDOM_SEED} dropped all or none of {len(written)} writes"
    # Same seed, same unflushed writes: the same subset, by what the writes were (seqs could shift with the guest's own I/O).
    assert unflushed_writes(two) == written, "the second run's unflushed writes differ: the comparison below would mean nothing"
    assert ident(reports[1]["dropped"]) == ident(rep["dropped"]) and ident(reports[1]["kept"]) == ident(rep["kept"])


def test_power_cut_drop_random_disk_matches_the_report_sector_by_sector(drop_random_twice):
    for out in drop_random_twice:
        rep = json.loads((out / "power-cut.json").read_text())
        kept = {(w["sector"], w["sectors"]) for w in rep["kept"]}
        b = extents(out, "/b.bin")
        # b.bin was built zero-filled and none of its writes was flushed: each
        # sector holds the data of the last kept write over it, else zeros.
        want = {}
        for sector, n, data in unflushed_writes(out):
            assert inside(sector, n, b), f"an unflushed write at {sector}+{n} outside b.bin"
            assert data != bytes(n * 512), "a write of zeros: dropped and kept would look alike"
            for i in range(n):
                if (sector, n) in kept:
                    want[sector + i] = data[i * 512:(i + 1) * 512]
                else:
                    want.setdefault(sector + i, bytes(512))
        for lo, hi in b:
            got = image_sectors(out, lo, hi - lo)
            for s in range(lo, hi):
                assert got[(s - lo) * 512:(s - lo + 1) * 512] == want.get(s, bytes(512)), f"{out.name}: sector {s} of b.bin is not what the report says"


def test_power_cut_after_fsync_keeps_everything(tmp_path):
    out = tmp_path / "fsynced"
    r = run(power_cut_scenario(tmp_path, "drop_all", fsync_b=True), out)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "power-cut.json").read_text())
    b = extents(out, "/b.bin")
    assert not [w for w in report["dropped"] if inside(w["sector"], w["sectors"], b)], "an fsync'd write was lost"
    b_sha = next(s for s in step_results(out) if s["op"] == "write" and s["index"] == max(
        x["index"] for x in step_results(out) if x["op"] == "write"))["xxh128"]
    data = b"".join(image_sectors(out, lo, hi - lo) for lo, hi in b)[:256 * 1024]
    assert xxhash.xxh3_128_hexdigest(data) == b_sha, "b.bin on the surviving disk is not what was written"


def scenario_with(tmp_path, name, rule, steps, file_size="256K", content="zero", extra=""):
    text = f'''[scenario]
name = "{name}"
[disk]
fs = "vfat"
size = "64M"
[[disk.files]]
path = "/f.bin"
size = "{file_size}"
content = "{content}"
seed = 9
[[faults]]
rule = "{rule}"
file = "/f.bin"
{extra}
[[steps]]
op = "mount"
''' + steps
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


def test_torn_write_persists_only_its_first_sectors(tmp_path):
    steps = '''[[steps]]
op = "write"
path = "/mnt/f.bin"
length = "64K"
bs = "64K"
direct = true
seed = 4
expect = { ret = -1, errno = "EIO" }
'''
    out = tmp_path / "torn"
    r = run(scenario_with(tmp_path, "torn", "torn=8 op=write first=1", steps), out)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = next(x for x in requests(out) if x.get("fault", {}).get("action") == "torn")
    assert rec["op"] == "write" and rec["status"] == "ioerr" and rec["bytes"] == 65536
    got = image_sectors(out, rec["sector"], 128)
    assert got[:8 * 512] != bytes(8 * 512), "the first 8 sectors were not written"
    assert got[8 * 512:] == bytes(120 * 512), "sectors after the tear were written"


def test_corrupt_read_and_lying_write(tmp_path):
    steps = '''[[steps]]
op = "drop_caches"
[[steps]]
op = "read"
path = "/mnt/f.bin"
direct = true
bs = "64K"
expect = { ret = 0, bytes = "256K" }
[[steps]]
op = "write"
path = "/mnt/f.bin"
offset = "128K"
length = "64K"
bs = "64K"
direct = true
seed = 6
expect = { ret = 0, bytes = "64K" }
'''
    out = tmp_path / "corrupt"
    sc = scenario_with(tmp_path, "corrupt", "corrupt=100:0x5a op=read first=1", steps, content="random")
    sc.write_text(sc.read_text().replace('[[steps]]\nop = "mount"', '[[faults]]\nrule = "lie op=write"\nfile = "/f.bin"\n\n[[steps]]\nop = "mount"', 1))
    r = run(sc, out)
    assert r.returncode == 0, r.stdout + r.stderr
    res = step_results(out)
    read = next(s for s in res if s["op"] == "read")
    file = json.loads((out / "extents.json").read_text())["files"][0]
    file_sha = file["sha256"]
    assert read["xxh128"] != file["xxh128"], "the corrupted read returned the file's bytes"
    recs = requests(out)
    assert [x["fault"]["action"] for x in recs if "fault" in x and x["op"] == "read"] == ["corrupt"]
    # The lying write said yes and left the disk as the builder made it.
    lied = [x for x in recs if x.get("fault", {}).get("action") == "lie"]
    assert lied and all(x["status"] == "ok" for x in lied)
    lo, hi = extents(out, "/f.bin")[0]
    assert hashlib.sha256(image_sectors(out, lo, 512)).hexdigest() == file_sha, "a lying write reached the disk"


def test_reordered_completions_keep_the_data_right(tmp_path):
    steps = '''[[steps]]
op = "drop_caches"
[[steps]]
op = "read"
path = "/mnt/f.bin"
direct = true
bs = "1M"
expect = { ret = 0, bytes = "1M", sha256 = "file" }
'''
    out = tmp_path / "reorder"
    # One O_DIRECT read of 1 MiB with 64 KiB segments limits: several requests in flight at once.
    sc = scenario_with(tmp_path, "reorder", "reorder=2 op=read every=2", steps, file_size="1M", content="random",
                       extra='[device]\nsize_max = 65536\nseg_max = 1')
    r = run(sc, out)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = [x for x in requests(out) if x["op"] == "read"]
    reordered = [x for x in recs if x.get("fault", {}).get("action") == "reorder"]
    assert reordered, "no read was reordered"
    overtaken = [x for x in reordered if any(y["seq"] > x["seq"] and y["queue"] == x["queue"] and y["t_complete_ns"] < x["t_complete_ns"] for y in recs)]
    assert overtaken, "no later request completed before a reordered one"
