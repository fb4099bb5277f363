"""`blkrig run` end to end: scenarios from scenarios/ on real guest kernels,
with the device trace, the guest's events and the step results agreeing."""

import hashlib
import json
import os
import shutil
import subprocess

import pytest

import blkrig_test as bt

SCEN = bt.REPO / "scenarios"


def run(scenario, out, *args, timeout=600):
    r = subprocess.run([str(bt.blkrig()), "run", str(scenario), "--out", str(out), *args], capture_output=True, text=True,
                       timeout=timeout)
    return r


def load_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_requests(run_dir, agent_index):
    """Device requests between the markers around one agent step."""
    recs = bt.trace_records(run_dir / "trace.bin")
    markers = {r["index"]: r["seq"] for r in recs if r["kind"] == "marker"}
    lo, hi = markers[2 * agent_index], markers[2 * agent_index + 1]
    return [r for r in recs if r["kind"] == "request" and lo < r["seq"] < hi]


@pytest.fixture(scope="module")
def contiguous(tmp_path_factory):
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched: run ci/setup")
    out = tmp_path_factory.mktemp("run") / "contiguous"
    r = run(SCEN / "read-contiguous.toml", out)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    return out


def test_read_scenario_run_folder(contiguous):
    out = contiguous
    for f in ["trace.bin", "guest-events.jsonl", "results.jsonl", "verdict.json", "console.log", "extents.json", "disk.img"]:
        assert (out / f).exists(), f"{f} missing from the run folder"
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["outcome"] == "pass" and verdict["exit_code"] == 0
    # The read step's checksum is the file's, as the disk builder wrote it.
    read = next(s for s in verdict["steps"] if s["op"] == "read")
    content = next(c for c in read["checks"] if c["what"] == "content")
    assert content["ok"] and content["got"] == content["expected"] and len(content["got"]) == 32
    files = json.loads((out / "extents.json").read_text())["files"]
    assert content["expected"] == next(f["xxh128"] for f in files if f["path"] == "/f1.bin")
    # sha256 = "file" needs no SHA-256 in the guest.
    assert "sha256" not in next(r for r in load_jsonl(out / "results.jsonl") if r.get("op") == "read")
    events = load_jsonl(out / "guest-events.jsonl")
    assert any(e["event"] == "block_bio_queue" for e in events), "no block_bio_queue in the guest's events"
    assert any(e.get("function") == "do_mpage_readpage" for e in events), "do_mpage_readpage was not hit"


def newc_members(data):
    """{name: bytes} of every newc archive in data, one after another, as the
    kernel reads them (cpio -t stops at the first one's trailer)."""
    out, at = {}, 0
    while at + 110 <= len(data):
        if data[at:at + 6] != b"070701":
            assert data[at] == 0, f"no newc header at byte {at}"
            at += 1  # the zero padding between archives
            continue
        namesize, filesize = int(data[at + 94:at + 102], 16), int(data[at + 54:at + 62], 16)
        name = data[at + 110:at + 110 + namesize - 1].decode()
        body = (at + 110 + namesize + 3) & ~3
        if name != "TRAILER!!!":
            out[name] = data[body:body + filesize]
        at = (body + filesize + 3) & ~3
    return out


def test_the_agents_initramfs_is_init_modules_and_the_run(contiguous, tmp_path):
    """The guest copies every byte of the initramfs before /init starts: a run's
    holds the agent (no symbols), its modules and run.json, and no busybox,
    which only the vm command's shell uses."""
    members = newc_members((contiguous / "initrd.cpio").read_bytes())
    assert {"init", "etc/blkrig/run.json", "lib/modules/load-order"} <= set(members), sorted(members)
    assert json.loads(members["etc/blkrig/run.json"]) == json.loads((contiguous / "run.json").read_text())
    assert any(p.startswith("lib/modules/") and p.endswith(".ko") for p in members)
    assert not [p for p in members if p.startswith("bin/")], sorted(members)
    assert members["init"][:4] == b"\x7fELF"
    (tmp_path / "init").write_bytes(members["init"])
    sections = subprocess.run(["readelf", "-S", "-W", str(tmp_path / "init")], capture_output=True, check=True).stdout
    assert b".text" in sections and b".symtab" not in sections and b".debug_info" not in sections


def test_phase_times_add_up(contiguous):
    """verdict.json says where the run's time went: each phase a time, their sum
    within the whole, and the host's hello-to-done span holds the steps the
    guest timed."""
    ph = json.loads((contiguous / "verdict.json").read_text())["phases"]
    names = ["build_s", "boot_s", "steps_s", "shutdown_s", "checks_s"]
    assert all(isinstance(ph[n], float) and ph[n] >= 0 for n in names + ["total_s"]), ph
    assert sum(ph[n] for n in names) <= ph["total_s"] + 0.01, ph
    steps = [r for r in load_jsonl(contiguous / "results.jsonl") if r["type"] == "step"]
    guest_span = (steps[-1]["t_end_ns"] - steps[0]["t_start_ns"]) / 1e9
    assert ph["steps_s"] >= 0.9 * guest_span, (ph, guest_span)
    boot = json.loads((contiguous / "boot.json").read_text())
    assert boot["hello_s"] == ph["boot_s"] and boot["done_s"] - boot["hello_s"] == pytest.approx(ph["steps_s"]), boot


def test_markers_bracket_every_step(contiguous):
    results = [r for r in load_jsonl(contiguous / "results.jsonl") if r["type"] == "step"]
    recs = bt.trace_records(contiguous / "trace.bin")
    markers = {r["index"]: r["seq"] for r in recs if r["kind"] == "marker"}
    assert results, "no step results"
    for s in results:
        i = s["index"]
        assert 2 * i in markers and 2 * i + 1 in markers, f"step {i} ({s['op']}) has no markers around it"
        assert markers[2 * i] < markers[2 * i + 1]
    # The read of the whole file happened between its markers, at the device.
    read = next(s for s in results if s["op"] == "read")
    reqs = step_requests(contiguous, read["index"])
    assert sum(r["bytes"] for r in reqs if r["op"] == "read") >= 4 << 20


def test_guest_bios_and_device_requests_agree(contiguous):
    """With nomerges=2 and no scheduler each bio is one request: the guest's
    block_rq_issue sectors are exactly the device's read sectors in that step."""
    results = [r for r in load_jsonl(contiguous / "results.jsonl") if r["type"] == "step"]
    read = next(s for s in results if s["op"] == "read")
    dev = {(r["sector"], r["bytes"] // 512) for r in step_requests(contiguous, read["index"]) if r["op"] == "read"}
    events = load_jsonl(contiguous / "guest-events.jsonl")
    issued = {(e["sector"], e["nsect"]) for e in events if e["event"] == "block_rq_issue" and "R" in e.get("rwbs", "")}
    assert dev and dev <= issued, f"device requests the guest never issued: {sorted(dev - issued)[:5]}"
    # M1: multi-page requests, not one per page.
    assert max(n for _, n in dev) > 8


def test_fragmented_file_gives_more_smaller_requests(contiguous, tmp_path):
    out = tmp_path / "fragmented"
    r = run(SCEN / "read-fragmented.toml", out)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"

    def read_reqs(d):
        results = [x for x in load_jsonl(d / "results.jsonl") if x["type"] == "step"]
        read = next(s for s in results if s["op"] == "read")
        return [q for q in step_requests(d, read["index"]) if q["op"] == "read"]

    frag, cont = read_reqs(out), read_reqs(contiguous)
    mean = lambda rs: sum(q["bytes"] for q in rs) / len(rs)
    assert len(frag) > len(cont), f"fragmented {len(frag)} requests, contiguous {len(cont)}"
    assert mean(frag) < mean(cont)
    extents = json.loads((out / "extents.json").read_text())
    assert len(extents["files"][0]["extents"]) == 8


@pytest.mark.skipif(not bt.have_kernel("debian-trixie-cloud"), reason="debian-trixie-cloud not fetched: run ci/setup")
def test_read_scenario_on_trixie_cloud(tmp_path):
    r = run(SCEN / "read-contiguous.toml", tmp_path / "trixie", "--kernel", "debian-trixie-cloud")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    events = load_jsonl(tmp_path / "trixie" / "guest-events.jsonl")
    assert any(e["event"] == "block_bio_queue" for e in events)
    assert any(e.get("function", "").startswith(("do_mpage_readpage", "mpage_read")) for e in events)


def test_write_fsync_scenario(tmp_path):
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched")
    r = run(SCEN / "write-fsync.toml", tmp_path / "w")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    results = {s["op"]: s for s in load_jsonl(tmp_path / "w" / "results.jsonl") if s["type"] == "step"}
    # What was written is what came back.
    assert results["write"]["xxh128"] == results["read"]["xxh128"]
    ops = {q["op"] for q in bt.trace_records(tmp_path / "w" / "trace.bin") if q["kind"] == "request"}
    assert {"write", "flush"} <= ops


def test_failed_expectation_exits_1_and_names_the_step(tmp_path):
    bad = tmp_path / "wrong.toml"
    bad.write_text((SCEN / "read-contiguous.toml").read_text().replace('bytes = "4M"', 'bytes = "3M"'))
    r = run(bad, tmp_path / "wrong")
    assert r.returncode == 1, f"{r.stdout}\n{r.stderr}"
    assert "step 2 (read /mnt/f1.bin" in r.stdout and "bytes expected 3145728, got 4194304" in r.stdout


def test_bad_scenario_is_exit_2_with_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[disk]\nfs = "vfat"\nsizee = "4M"\n[[steps]]\nop = "mount"\n')
    r = run(bad, tmp_path / "bad")
    assert r.returncode == 2
    assert f"{bad}:3:1: unknown key 'sizee'" in r.stderr
    assert not (tmp_path / "bad").exists() or not (tmp_path / "bad" / "trace.bin").exists()


def test_kernel_without_the_module_is_exit_2(tmp_path):
    """A user's kernel folder that lacks vfat: the run refuses before booting."""
    src = bt.kernel_dir()
    k = tmp_path / "kernel"
    (k / "modules").mkdir(parents=True)
    os.symlink(src / "vmlinuz", k / "vmlinuz")
    release = (src / "release").read_text().strip()
    (k / "release").write_text(release + "\n")
    mods = src / "modules"
    for rel in ["kernel/drivers/virtio", "kernel/drivers/block/virtio_blk.ko", "kernel/drivers/char/virtio_console.ko"]:
        p = mods / rel
        dst = k / "modules" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if p.is_dir() else shutil.copy)(p, dst)
    for f in mods.glob("modules.builtin*"):
        shutil.copy(f, k / "modules")
    for f in mods.glob("modules.order"):
        shutil.copy(f, k / "modules")
    # As a user would: depmod over the folder (depmod wants BASE/lib/modules/VERSION).
    base = tmp_path / "depmod-root"
    (base / "lib" / "modules").mkdir(parents=True)
    os.symlink(k / "modules", base / "lib" / "modules" / release)
    subprocess.run(["depmod", "-b", str(base), release], check=True, capture_output=True)
    r = run(SCEN / "read-contiguous.toml", tmp_path / "out", "--kernel", str(k))
    assert r.returncode == 2, f"{r.stdout}\n{r.stderr}"
    assert "module 'vfat' not found" in r.stderr and f"{SCEN / 'read-contiguous.toml'}:9: disk.fs" in r.stderr
    assert not subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout, "something was left running"


def test_kernel_that_does_not_boot_is_exit_3_with_console_tail(tmp_path):
    """A kernel image QEMU cannot start: exit 3, the reason and the console tail, nothing left running."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched")
    k = tmp_path / "kernel"
    k.mkdir()
    (k / "vmlinuz").write_bytes(b"\x7fELF not really a kernel" * 100)
    os.symlink(bt.kernel_dir() / "modules", k / "modules")
    shutil.copy(bt.kernel_dir() / "release", k / "release")
    r = run(SCEN / "read-contiguous.toml", tmp_path / "out", "--kernel", str(k), timeout=300)
    assert r.returncode == 3, f"{r.stdout}\n{r.stderr}"
    assert "boot:" in r.stderr and "console.log" in r.stderr
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["outcome"] == "error" and verdict["exit_code"] == 3
    # No hello ever came: the phases after the build are unknown, not 0.
    assert verdict["phases"]["boot_s"] is None and verdict["phases"]["steps_s"] is None, verdict["phases"]
    assert verdict["phases"]["build_s"] > 0, verdict["phases"]
    assert not subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout, "something was left running"


def test_own_build_with_kernel_and_modules(tmp_path):
    """--kernel BZIMAGE --modules DIR: a user's own build, laid out as a catalogue kernel in the run folder."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched")
    k = bt.kernel_dir()
    r = run(SCEN / "read-contiguous.toml", tmp_path / "own", "--kernel", str(k / "vmlinuz"), "--modules", str(k / "modules"))
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    hello = next(json.loads(l) for l in (tmp_path / "own" / "results.jsonl").read_text().splitlines() if '"hello"' in l)
    assert hello["kernel"] == (k / "release").read_text().strip()
    r = run(SCEN / "read-contiguous.toml", tmp_path / "bad", "--kernel", str(k / "vmlinuz"), "--modules", str(tmp_path))
    assert r.returncode == 2 and "no modules.dep" in r.stderr


def test_read_eio_inside_a_file(tmp_path):
    """M6: read() returns the bytes before the bad page, then EIO; later pages read fine; the trace
    marks exactly the requests that hold the failing sectors."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched")
    out = tmp_path / "eio"
    r = run(SCEN / "read-eio.toml", out)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    ext = json.loads((out / "extents.json").read_text())["files"][0]["extents"]
    assert len(ext) == 1
    bad_lo = ext[0]["sector"] + 80 * 1024 // 512
    bad_hi = bad_lo + 7
    recs = bt.trace_records(out / "trace.bin")
    # Until the rule is disarmed as step 4 begins (its opening marker, 2 * 4).
    disarmed = next(m["seq"] for m in recs if m["kind"] == "marker" and m["index"] == 8)
    reqs = [q for q in recs if q["kind"] == "request" and q["seq"] < disarmed]
    hit = [q for q in reqs if "fault" in q]
    assert hit and all(q["status"] == "ioerr" and q["fault"]["action"] == "ioerr" for q in hit)
    for q in reqs:
        overlaps = q["op"] == "read" and q["sector"] <= bad_hi and q["sector"] + q["bytes"] // 512 - 1 >= bad_lo
        assert overlaps == ("fault" in q), f"request seq {q['seq']} sector {q['sector']}+{q['bytes'] // 512}: fault attribution wrong"


def test_write_eio_fsync_reports_once(tmp_path):
    """M7: fsync() returns EIO, the next fsync() on the same open file returns 0."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched")
    out = tmp_path / "weio"
    r = run(SCEN / "write-eio-fsync.toml", out)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    steps = [s for s in load_jsonl(out / "results.jsonl") if s["type"] == "step" and s["op"] == "fsync"]
    assert [(s["ret"], s["error"]) for s in steps] == [(-1, "EIO"), (0, "")]
    assert any("fault" in q and q["op"] == "write" for q in bt.trace_records(out / "trace.bin") if q["kind"] == "request")


def test_bad_fault_rule_is_exit_2_with_column(tmp_path):
    bad = tmp_path / "f.toml"
    bad.write_text('[[faults]]\nrule = "ioerr op=reed"\n[[steps]]\nop = "sync"\n')
    r = run(bad, tmp_path / "out")
    assert r.returncode == 2
    assert f"{bad}:2:" in r.stderr and "expected an op" in r.stderr


def test_fault_armed_after_a_step(tmp_path):
    """A fault armed by a step: the read before it succeeds, the read after it fails at the bad page."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched")
    r = run(SCEN / "read-eio-after-step.toml", tmp_path / "armed")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    boot = json.loads((tmp_path / "armed" / "boot.json").read_text())
    assert any("after_marker=" in a for a in boot["device_args"])


def test_read_eio_then_rule_removed_reads_again(tmp_path):
    """The rule of read-eio.toml is disarmed as step 4 begins; the same file then reads whole and right."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched")
    out = tmp_path / "eio2"
    r = run(SCEN / "read-eio.toml", out)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    reads = [s for s in load_jsonl(out / "results.jsonl") if s["type"] == "step" and s["op"] == "read"]
    assert [s["ret"] for s in reads] == [-1, 0, 0] and reads[-1]["bytes"] == 256 * 1024


def test_delayed_requests_still_deliver_the_right_bytes(tmp_path):
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched")
    out = tmp_path / "delay"
    r = run(SCEN / "read-delayed.toml", out)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    delayed = [q for q in bt.trace_records(out / "trace.bin") if q["kind"] == "request" and "fault" in q]
    assert delayed and all(q["fault"]["action"] == "delay" and q["status"] == "ok" for q in delayed)
    # The device held each one at least the rule's 300 ms (its own clock).
    assert all(q["t_complete_ns"] - q["t_submit_ns"] >= 300_000_000 for q in delayed)


def test_second_boot_sets_the_function_filter_from_the_first(tmp_path):
    """The first boot of a kernel reads available_filter_functions and its
    lines are kept (run/filter_hint); the second sets them without reading
    the list, and traces the same functions: the hint changes the setup's
    cost, not what is traced (docs/agent-protocol.md, trace.filter_hint)."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched: run ci/setup")
    env = dict(os.environ, BLKRIG_BUILD_CACHE=str(tmp_path / "cache"))
    hellos = []
    for i in range(2):
        out = tmp_path / f"r{i}"
        r = subprocess.run([str(bt.blkrig()), "run", str(SCEN / "read-contiguous.toml"), "--out", str(out)], capture_output=True,
                           text=True, timeout=600, env=env)
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        hellos.append(json.loads((out / "verdict.json").read_text())["guest"])
    first, second = hellos
    assert first["filter_hint"] == "none" and first["filter_lines"], first
    assert second["filter_hint"] == "used", second
    assert second["filter_lines"] == first["filter_lines"]
    assert second["functions_traced"] == first["functions_traced"] and second["functions_missing"] == first["functions_missing"]
    assert "filter_hint" in json.loads((tmp_path / "r1" / "run.json").read_text())["trace"]
    # What was traced is the same too: the mpage functions the read hit.
    hit = [sorted({e["function"] for e in load_jsonl(tmp_path / f"r{i}" / "guest-events.jsonl") if e.get("event") == "function"})
           for i in range(2)]
    assert hit[0] == hit[1] and hit[0], hit


def test_a_kept_extent_check_is_checked_again_on_the_host(tmp_path):
    """The extent check an earlier boot passed is kept beside the build
    cache: the next boot of the same image and kernel skips the guest's
    mount and FIEMAP and checks the kept record against the image's extents
    on the host, so a record that does not fit the image still fails the
    run (exit 3); --fresh-extent-check runs it in the guest again."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched: run ci/setup")
    env = dict(os.environ, BLKRIG_BUILD_CACHE=str(tmp_path / "cache"))

    def go(name, *args):
        out = tmp_path / name
        r = subprocess.run([str(bt.blkrig()), "run", str(SCEN / "read-contiguous.toml"), "--out", str(out), *args], capture_output=True,
                           text=True, timeout=600, env=env)
        return r, json.loads((out / "verdict.json").read_text())

    r, first = go("first")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cached" not in first["before_steps"]["extent_check"]
    r, second = go("second")
    assert r.returncode == 0, r.stdout + r.stderr
    assert second["before_steps"]["extent_check"]["cached"] is True
    assert second["before_steps"]["extent_check"]["files"] == first["before_steps"]["extent_check"]["files"]
    assert "extent_check" not in json.loads((tmp_path / "second" / "run.json").read_text()), "the guest was asked to check again"

    memos = list((tmp_path / "cache" / "extent-check").glob("*.json"))
    assert len(memos) == 1, memos
    wrong = json.loads(memos[0].read_text())
    wrong["files"][0]["extents"][0]["physical"] += 4096
    memos[0].write_text(json.dumps(wrong))
    r, third = go("third")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "disagree" in r.stdout + r.stderr and "kept" in r.stdout + r.stderr
    assert not memos[0].exists(), "a kept record that did not fit is still kept"

    r, fresh = go("fresh", "--fresh-extent-check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cached" not in fresh["before_steps"]["extent_check"]


LITERAL_SHA = """
[scenario]
name = "literal-sha256"
[disk]
fs = "vfat"
size = "64M"
[[steps]]
op = "mount"
[[steps]]
op = "write"
path = "/mnt/z.bin"
length = "256K"
pattern = "zero"
[[steps]]
op = "read"
path = "/mnt/z.bin"
expect = {{ sha256 = "{good}" }}
[[steps]]
op = "read"
path = "/mnt/z.bin"
expect = {{ sha256 = "{bad}" }}
[[steps]]
op = "umount"
"""


def test_literal_sha256_is_the_guests_sha256(tmp_path):
    """A literal expect.sha256 makes the agent hash that step with SHA-256 as
    well (the others report XXH3-128 only); a right digest passes, a wrong
    one fails the run naming both."""
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched")
    zeros = bytes(256 << 10)
    good, bad = hashlib.sha256(zeros).hexdigest(), hashlib.sha256(b"x").hexdigest()
    (tmp_path / "s.toml").write_text(LITERAL_SHA.format(good=good, bad=bad))
    r = run(tmp_path / "s.toml", tmp_path / "out")
    assert r.returncode == 1, f"{r.stdout}\n{r.stderr}"
    steps = {s["index"]: s for s in load_jsonl(tmp_path / "out" / "results.jsonl") if s["type"] == "step"}
    assert "sha256" not in steps[1] and len(steps[1]["xxh128"]) == 32
    assert steps[2]["sha256"] == good and steps[3]["sha256"] == good
    assert steps[2]["xxh128"] == steps[1]["xxh128"]
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    checks = {s["index"]: {c["what"]: c for c in s["checks"]} for s in verdict["steps"]}
    assert checks[2]["sha256"]["ok"] and not checks[3]["sha256"]["ok"]
    assert bad in r.stdout + r.stderr and good in r.stdout + r.stderr, r.stdout
