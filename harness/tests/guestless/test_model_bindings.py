"""The run model's Python bindings (blkrig_model) and `blkrig check`, on a run
folder this test writes itself: a trace in the documented format
(docs/trace-format.md, packed here independently of the device's writer),
guest events as parse_ftrace writes them, extents and step results."""

import json
import struct
import subprocess
import sys

import pytest

import blkrig_test as bt

try:
    import blkrig_model as bm
except ImportError:
    sys.path.insert(0, str(bt.build_dir() / "harness" / "python"))
    import blkrig_model as bm

MARKER = 131072
DEV = "254,0"


def pad8(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 8)


def record(kind: int, body: bytes, flags: int = 0) -> bytes:
    body = pad8(body)
    return struct.pack("<IHH", 8 + len(body), kind, flags) + body


class Folder:
    """A run folder built step by step; each step is bracketed by marker reads."""

    def __init__(self, path):
        self.path = path
        self.seq = 0
        self.t = 1_000_000
        self.ts = 1.0
        self.trace = []
        self.guest = []
        self.steps = []
        self.results = []
        self.requests = 0

    def ev(self, **kw):
        self.ts += 1e-6
        self.guest.append(dict(ts=self.ts, cpu=0, **kw))

    def marker(self, index):
        s = MARKER + index
        self.ev(event="block_rq_issue", dev=DEV, rwbs="RS", sector=s, nsect=1, bytes=512)
        self.trace.append(record(5, struct.pack("<QQIHH", self.seq, self.t, index, 0, 0)))
        self.seq += 1
        self.ev(event="block_rq_complete", dev=DEV, rwbs="RS", sector=s, nsect=1, error=0)

    def step(self, op, path=None):
        self.steps.append({"op": op, **({"path": path} if path else {})})
        self.marker(2 * (len(self.steps) - 1))

    def end(self, ret=0):
        i = len(self.steps) - 1
        self.marker(2 * i + 1)
        self.results.append({"type": "step", "index": i, "op": self.steps[i]["op"], "ret": ret, "errno": 0, "error": "", "call": "",
                             "marker_begin": 2 * i, "marker_end": 2 * i + 1})

    def request(self, vtype, sector, sectors, bios=None, rwbs="R", status=0, fault=None, nsegs=1):
        for s, n in bios or [(sector, sectors)]:
            self.ev(event="block_bio_queue", dev=DEV, rwbs=rwbs, sector=s, nsect=n)
        self.ev(event="block_rq_issue", dev=DEV, rwbs=rwbs, sector=sector, nsect=sectors, bytes=sectors * 512)
        nbytes = sectors * 512
        segs = [nbytes // nsegs] * nsegs
        body = struct.pack("<QQQQQIHHHBBHH", self.seq, sector, nbytes, self.t, self.t + 500, vtype, 0, 0, nsegs, status, 0, nsegs, 0)
        self.trace.append(record(1, body + struct.pack(f"<{nsegs}I", *segs)))
        if fault:
            self.trace.append(record(6, struct.pack("<QIHHQ", self.seq, fault[0], fault[1], 0, 0)))
        self.t += 1000
        self.seq += 1
        self.requests += 1
        self.ev(event="block_rq_complete", dev=DEV, rwbs=rwbs, sector=sector, nsect=sectors, error=0 if status == 0 else -5)
        return self.seq - 1

    def write(self):
        p = self.path
        (p / "run.json").write_text(json.dumps({"version": 1, "disk": "/dev/vda", "mountpoint": "/mnt",
                                                "marker": {"first_sector": MARKER, "count": 64, "block_size": 512},
                                                "steps": self.steps}))
        (p / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.results) + '{"type":"done"}\n')
        (p / "guest-events.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in self.guest))
        (p / "extents.json").write_text(json.dumps({"files": [
            {"path": "/f.bin", "size_bytes": 65536, "extents": [{"file_offset": 0, "sector": 1000, "sectors": 64},
                                                                 {"file_offset": 32768, "sector": 2000, "sectors": 64}]}]}))
        config = b"{}"
        header = b"BLKRIGTR" + struct.pack("<IIQQII", 1, len(config), 0, MARKER + 64, 512, 1) + config
        end = record(4, struct.pack("<QQQ", self.t, self.requests, 0))
        (p / "trace.bin").write_bytes(pad8(header) + b"".join(self.trace) + end)


@pytest.fixture
def folder(tmp_path):
    f = Folder(tmp_path)
    f.step("mount")
    f.request(0, 0, 1)
    f.end()
    f.step("read", "/mnt/f.bin")
    f.ev(event="function", function="do_mpage_readpage", parent="mpage_readahead")
    f.request(0, 1000, 32, bios=[(1000, 16), (1016, 16)], rwbs="RA")
    f.request(0, 1032, 32, rwbs="RA", nsegs=2)
    f.request(0, 2000, 64, rwbs="RA", status=1, fault=(4, 1))
    f.end(ret=-1)
    f.write()
    return tmp_path


def test_load_and_steps(folder):
    run = bm.load_run(folder)
    assert [s.op for s in run.steps] == ["mount", "read"]
    read = run.steps[1]
    assert (read.index, read.path, read.ok, read.ret) == (1, "/mnt/f.bin", False, -1)
    # mount: markers seq 0 and 2 around request 1; read: markers 3 and 7 around 4..6.
    assert (run.steps[0].first_seq, run.steps[0].last_seq) == (1, 1)
    assert (read.first_seq, read.last_seq) == (4, 6)
    assert run.findings == []


def test_requests_and_correlation(folder):
    run = bm.load_run(folder)
    reqs = run.requests(step=1, op="read")
    assert [r.seq for r in reqs] == [4, 5, 6]
    first = reqs[0]
    assert (first.op, first.sector, first.sectors, first.bytes, first.status) == ("read", 1000, 32, 16384, "ok")
    assert first.bios == [(1000, 16), (1016, 16)]
    assert first.guest_rwbs == "RA"
    assert (first.file, first.file_offset) == ("/mnt/f.bin", 0)
    assert reqs[1].seg_lens == [8192, 8192]
    failed = reqs[2]
    assert (failed.status, failed.fault_rule, failed.fault_action) == ("ioerr", 4, "ioerr")
    assert run.requests(step=1, op="write") == []
    assert len(run.requests()) == 4


def test_queries(folder):
    run = bm.load_run(folder)
    assert run.extents("/mnt/f.bin") == [(0, 1000, 64), (32768, 2000, 64)]
    assert [r.file_offset for r in run.file_requests("/mnt/f.bin", step=1)] == [0, 16384, 32768]
    assert run.request_at("/mnt/f.bin", 20000, step=1).seq == 5
    assert run.request_at("/mnt/f.bin", 20000, op="write", step=1) is None
    assert run.merge_ratio(step=1) == pytest.approx(4 / 3)
    assert run.ascending_runs(step=1) == [[4, 5, 6]]
    assert run.contiguous_runs(step=1) == [[4, 5], [6]]
    assert run.backward_seeks(step=1) == 0
    assert run.size_histogram(step=1) == {16384: 2, 32768: 1}
    assert run.functions_hit(step=1) == {"do_mpage_readpage"}
    assert run.functions_hit(step=0) == set()
    issues = run.guest_events(step=1, event="block_rq_issue")
    assert [e["sector"] for e in issues] == [1000, 1032, 2000]
    assert [f.seq for f in run.fault_hits(step=1)] == [6]
    with pytest.raises(ValueError):
        run.requests(step=9)
    with pytest.raises(ValueError):
        run.extents("/mnt/nope")


def test_check(folder):
    run = bm.load_run(folder)
    ok = bm.check(run, {"step": 1, "file": "/mnt/f.bin", "split_at_extents": True})
    assert ok.ok and ok.offender_seq is None
    bad = bm.check(run, {"step": 1, "file": "/mnt/f.bin", "max_request_bytes": 16384})
    assert not bad.ok
    assert bad.offender_seq == 6
    assert "first offender seq 6 sector 2000 (file offset 32768)" in bad.message
    with pytest.raises(ValueError, match="unknown key"):
        bm.check(run, {"step": 1, "max_request_byte": 1})
    with pytest.raises(ValueError, match="step 5"):
        bm.check(run, {"step": 5, "ascending": True})


def test_bad_folder(folder):
    (folder / "trace.bin").unlink()
    with pytest.raises(bm.RunError, match="trace.bin"):
        bm.load_run(folder)


def test_findings(tmp_path):
    f = Folder(tmp_path)
    f.step("read", "/mnt/f.bin")
    f.request(0, 1000, 8)
    f.ev(event="block_rq_issue", dev=DEV, rwbs="R", sector=1008, nsect=8)  # never reaches the device
    f.end()
    f.write()
    run = bm.load_run(tmp_path)
    assert any("never reached the device" in x for x in run.findings)
    assert any("R read 1008+8 (step 0" in x for x in run.findings)


def check_cli(folder, expectations: str):
    (folder / "e.toml").write_text(expectations)
    return subprocess.run([str(bt.blkrig()), "check", str(folder), str(folder / "e.toml")], capture_output=True, text=True)


def test_blkrig_check_exit_codes(folder):
    ok = check_cli(folder, '[[expect]]\nstep = 1\nfile = "/mnt/f.bin"\nsplit_at_extents = true\n')
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout
    fail = check_cli(folder, '[[expect]]\nstep = 1\nfile = "/mnt/f.bin"\nmax_request_bytes = 4096\n')
    assert fail.returncode == 1, fail.stdout + fail.stderr
    assert "first offender seq 4 sector 1000 (file offset 0)" in fail.stdout
    bad = check_cli(folder, '[[expect]]\nstep = 1\nmax_request_byts = 4096\n')
    assert bad.returncode == 2
    assert "e.toml:3: expect.max_request_byts: unknown key" in bad.stderr
    (folder / "guest-events.jsonl").unlink()
    gone = check_cli(folder, '[[expect]]\nstep = 1\nascending = true\n')
    assert gone.returncode == 2
    assert "guest-events.jsonl: missing" in gone.stderr
