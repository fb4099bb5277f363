"""`blkrig trace export` on a real trace, no guest: blkrig-bench drives
blkrig-device over two queues (writes, then reads, every 50th read failed by
a fault rule and the rest delayed by another, so requests overlap on a queue;
some reads land in the marker region), and each export
is checked against the trace-event format, blkparse's field order and CSV,
request by request against `blkrig trace dump`."""

import csv
import io
import json
import os
import re
import signal
import subprocess
import time

import pytest

import blkrig_test as bt

OPS_RWBS = {"read": "R", "write": "W", "flush": "F", "discard": "D", "write_zeroes": "WZ", "secure_erase": "DE"}
ERRORS = {"ok": 0, "ioerr": -5, "unsupp": -95, "none": -5}

# blkparse's default header "%D %2c %8s %5T.%9t %5p %2a %3d ", then per action
# "sector + count [comm]" (Q, D), "sector + count [error]" (C) or a message (m).
HEAD = r"(?P<maj>[ \d]{2}\d),(?P<min>\d+) *(?P<cpu>[ \d]\d) (?P<seq>[ \d]{7}\d) (?P<sec>[ \d]{4}\d)\.(?P<ns>\d{9}) (?P<pid>[ \d]{4}\d) (?P<act>[ A-Za-z]{2}) (?P<rwbs>[ A-Z]{3}) "
QD = re.compile(HEAD + r"(?:(?P<sector>\d+) \+ (?P<count>\d+) )?\[guest\]$")
C = re.compile(HEAD + r"(?P<sector>\d+) (?:\+ (?P<count>\d+) )?\[(?P<err>-?\d+)\]$")
M = re.compile(HEAD + r"(?P<text>.+)$")


def bench() -> str:
    b = bt.build_dir() / "bench" / "blkrig-bench"
    assert b.exists(), f"{b} is not built (ninja -C {bt.build_dir()} bench/blkrig-bench)"
    return str(b)


def blkrig(*args, **kw):
    return subprocess.run([str(bt.blkrig()), *args], capture_output=True, text=True, timeout=120, **kw)


class Device:
    def __init__(self, d, *args):
        self.sock, self.trace = str(d / "vu.sock"), d / "trace.bin"
        self.ctl = f"/tmp/blkrig-export-{os.getpid()}-{d.name}.sock"  # socket paths are short-limited
        self.log = open(d / "device.log", "w+")
        self.proc = subprocess.Popen([str(bt.device()), "--socket-path", self.sock, "--control", self.ctl, "--trace", str(self.trace),
                                      *args], stderr=self.log)
        deadline = time.monotonic() + 10
        while not (os.path.exists(self.sock) and os.path.exists(self.ctl)):
            assert self.proc.poll() is None, "blkrig-device exited at start"
            assert time.monotonic() < deadline, "blkrig-device never listened"
            time.sleep(0.01)

    def bench(self, op):
        r = subprocess.run([bench(), "--socket", self.sock, "--queues", "2", "--depth", "4", "--bs", "512", "--op", op, "--seconds", "1"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode in (0, 1), r.stderr  # 1: some requests failed, as the rules make them
        assert json.loads(r.stdout)["requests"] > 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=10) == 0


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    # The delays keep the trace small (a few thousand requests) and out of order.
    dev = Device(d, "--ram", "1M", "--num-queues", "2", "--marker-sectors", "64",
                 "--fault", "ioerr op=read every=50", "--fault", "delay=1ms..3ms seed=5")
    try:
        dev.bench("write")
        r = blkrig("fault", "--control", dev.ctl, "mark", "between writes and reads")
        assert r.returncode == 0, r.stderr
        dev.bench("read")
    finally:
        dev.stop()
    records = bt.trace_records(dev.trace)
    assert records[-1]["kind"] == "end"
    return dev.trace, records


def export(trace, fmt, *args):
    r = blkrig("trace", "export", str(trace), "--format", fmt, *args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout


def requests(records):
    return {r["seq"]: r for r in records if r["kind"] == "request"}


def test_the_trace_has_what_the_exports_must_show(traced):
    _, records = traced
    reqs = requests(records).values()
    assert {"read", "write"} <= {r["op"] for r in reqs}
    assert any("fault" in r and r["fault"]["action"] == "ioerr" for r in reqs)
    assert any("fault" in r and r["fault"]["action"] == "delay" for r in reqs)
    assert any(r["kind"] == "marker" for r in records)
    assert any(r["kind"] == "event" and r["event"] == "mark" for r in records)


def test_perfetto_is_valid_trace_event_json(traced):
    trace, records = traced
    doc = json.loads(export(trace, "perfetto"))
    assert doc["displayTimeUnit"] == "ns" and doc["otherData"]["complete"] is True
    events = doc["traceEvents"]
    names, slices, instants = {}, {}, []
    for e in events:
        assert {"name", "ph", "ts", "pid", "tid"} <= e.keys(), e
        assert e["ph"] in {"X", "i", "M"}, e
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        if e["ph"] == "M":
            assert e["name"] in {"process_name", "thread_name", "thread_sort_index"}, e
            if e["name"] == "thread_name":
                assert (e["pid"], e["tid"]) not in names, f"two names for thread {e['tid']}"
                names[(e["pid"], e["tid"])] = e["args"]["name"]
        elif e["ph"] == "X":
            assert e["dur"] >= 0, e
            assert e["args"]["seq"] not in slices
            slices[e["args"]["seq"]] = e
        else:
            assert e.get("s") in {"t", "p", "g"}, e
            instants.append(e)
    # One "queue N" thread per queue; further lanes of a queue are named as such.
    assert sorted(n for n in names.values() if re.fullmatch(r"queue \d+", n)) == ["queue 0", "queue 1"]
    assert all(re.fullmatch(r"queue \d+( lane \d+)?", n) for n in names.values())
    assert any(" lane " in n for n in names.values()), "four requests in flight per queue, yet one lane"
    for e in events:
        if e["ph"] != "M":
            assert (e["pid"], e["tid"]) in names, f"event on an unnamed thread: {e}"
    # Slices on one thread never overlap: the format requires slices to nest.
    by_tid = {}
    for s in slices.values():
        by_tid.setdefault(s["tid"], []).append((s["ts"], s["ts"] + s["dur"]))
    for spans in by_tid.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end - 1e-6
    # Every request is one slice with its fields; faults and markers are instants.
    want = requests(records)
    assert slices.keys() == want.keys()
    for seq, r in want.items():
        a = slices[seq]["args"]
        assert slices[seq]["name"] == r["op"]
        assert (a["queue"], a["sector"], a["bytes"], a["sectors"], a["status"], a["nsegs"], a["seg_lens"]) == \
            (r["queue"], r["sector"], r["bytes"], r["bytes"] // 512, r["status"], r["nsegs"], r["seg_lens"])
        assert names[(1, slices[seq]["tid"])].startswith(f"queue {r['queue']}")
        assert abs(slices[seq]["dur"] * 1000 - (r["t_complete_ns"] - r["t_submit_ns"])) < 1
        if "fault" in r:
            assert (a["fault_rule"], a["fault_action"]) == (r["fault"]["rule"], r["fault"]["action"])
        else:
            assert "fault_rule" not in a
    n_faults = sum("fault" in r for r in want.values())
    assert sum(i["cat"] == "fault" for i in instants) == n_faults
    assert sum(i["cat"] == "marker" for i in instants) == sum(r["kind"] == "marker" for r in records)
    assert any(i["name"] == "mark: between writes and reads" and i["s"] == "g" for i in instants)


def test_blkparse_lines_have_blkparses_fields_in_order(traced):
    trace, records = traced
    want = requests(records)
    seen = {seq: [] for seq in want}
    messages = []
    last = -1
    for line in export(trace, "blkparse").splitlines():
        head = re.match(HEAD, line)
        assert head, f"not blkparse's header: {line!r}"
        assert (head["maj"].strip(), head["min"], head["pid"].strip()) == ("254", "0", "0"), line
        t = int(head["sec"]) * 10**9 + int(head["ns"])
        assert t >= last, f"not sorted by time: {line!r}"
        last = t
        act, seq, cpu = head["act"].strip(), int(head["seq"]), int(head["cpu"])
        if act == "m":
            assert M.match(line) and head["rwbs"].strip() == "N" and seq == 0, line
            messages.append(line[M.match(line).start("text"):])
            continue
        m = (QD if act in "QD" else C).match(line)
        assert m and act in "QDC", f"bad {act} line: {line!r}"
        r = want[seq]
        assert cpu == r["queue"] and head["rwbs"].strip() == OPS_RWBS.get(r["op"], "N"), line
        sectors = r["bytes"] // 512
        if sectors or act == "C":
            assert int(m["sector"]) == r["sector"], line
        assert int(m["count"] or 0) == sectors, line
        if act == "C":
            assert int(m["err"]) == ERRORS[r["status"]], line
        seen[seq].append((act, t))
    for seq, acts in seen.items():
        r = want[seq]
        assert [a for a, _ in acts] == ["Q", "D", "C"], (seq, acts)
        assert acts[0][1] == acts[1][1] and acts[2][1] - acts[0][1] == r["t_complete_ns"] - r["t_submit_ns"]
    assert sum(m.startswith("marker ") for m in messages) == sum(r["kind"] == "marker" for r in records)
    assert sum(m.startswith("fault rule ") for m in messages) == sum("fault" in r for r in want.values())
    assert "mark: between writes and reads" in messages


def test_blkparse_device_column_is_settable(traced):
    trace, _ = traced
    first = export(trace, "blkparse", "--device", "8,16").splitlines()[0]
    assert first.startswith("  8,16 "), first


def test_csv_has_a_header_and_one_row_per_request(traced):
    trace, records = traced
    rows = list(csv.DictReader(io.StringIO(export(trace, "csv"))))
    assert list(rows[0].keys()) == ["seq", "queue", "head", "op", "sector", "sectors", "bytes", "nsegs", "seg_lens", "t_submit_ns",
                                    "t_complete_ns", "latency_ns", "status", "malformed", "fault_rule", "fault_action", "fault_delay_ns"]
    want = requests(records)
    assert [int(r["seq"]) for r in rows] == sorted(want)
    for row in rows:
        r = want[int(row["seq"])]
        for k in ("queue", "head", "sector", "sectors", "bytes", "nsegs", "t_submit_ns", "t_complete_ns", "latency_ns", "malformed"):
            int(row[k])
        assert (row["op"], row["status"], int(row["bytes"]), int(row["sector"])) == (r["op"], r["status"], r["bytes"], r["sector"])
        assert int(row["latency_ns"]) == r["t_complete_ns"] - r["t_submit_ns"]
        assert [int(x) for x in row["seg_lens"].split()] == r["seg_lens"]
        if "fault" in r:
            assert (int(row["fault_rule"]), row["fault_action"]) == (r["fault"]["rule"], r["fault"]["action"])
            int(row["fault_delay_ns"])
        else:
            assert row["fault_rule"] == row["fault_action"] == row["fault_delay_ns"] == ""


@pytest.mark.parametrize("fmt", ["blkparse", "perfetto", "csv"])
def test_out_writes_the_same_as_stdout(traced, tmp_path, fmt):
    trace, _ = traced
    out = tmp_path / f"export.{fmt}"
    r = blkrig("trace", "export", str(trace), "--format", fmt, "--out", str(out))
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert out.read_text() == export(trace, fmt)


@pytest.mark.parametrize("args,text", [
    (["/nonexistent/trace.bin", "--format", "csv"], "cannot open trace file /nonexistent/trace.bin"),
    (["TRACE", "--format", "pcap"], "--format pcap: unknown format"),
    (["TRACE"], "give --format"),
    (["NOT_A_TRACE", "--format", "blkparse"], "not a blkrig trace"),
    (["TRACE", "--format", "blkparse", "--device", "vda"], "--device vda"),
    (["TRACE", "--format", "csv", "--out", "/nonexistent/dir/x.csv"], "--out /nonexistent/dir/x.csv"),
])
def test_bad_input_is_exit_2(traced, tmp_path, args, text):
    trace, _ = traced
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world, this is not a trace file at all......")
    args = [str(trace) if a == "TRACE" else str(junk) if a == "NOT_A_TRACE" else a for a in args]
    r = blkrig("trace", "export", *args)
    assert r.returncode == 2 and text in r.stderr, (r.returncode, r.stderr)
    assert r.stdout == ""


def test_incomplete_trace_exports_what_it_has_with_a_warning(tmp_path):
    dev = Device(tmp_path, "--ram", "1M", "--num-queues", "2", "--fault", "delay=1ms")
    try:
        dev.bench("write")
    finally:
        dev.proc.kill()  # no end record
        dev.proc.wait()
        # Killed, the device cannot remove its control socket, which is outside tmp_path.
        if os.path.exists(dev.ctl):
            os.unlink(dev.ctl)
    n = sum(1 for r in bt.trace_records(dev.trace) if r["kind"] == "request")
    for strict, code in ((False, 0), (True, 1)):
        r = blkrig("trace", "export", str(dev.trace), "--format", "csv", *(["--strict"] if strict else []))
        assert r.returncode == code and "incomplete" in r.stderr, (r.returncode, r.stderr)
        assert len(list(csv.DictReader(io.StringIO(r.stdout)))) == n
