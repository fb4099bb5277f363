"""The mpage conformance suite: one test per row M1-M14 of the mpage contract
(docs/conformance.md), each asserted against what blkrig-device saw, on every
chosen kernel (`--blkrig-kernel`, default: every fetched catalogue kernel).

The contract comes from the comments of the 2.6-era fs/mpage.c this project
grew from; today's kernels keep the behaviour under folio names
(mpage_readahead, do_mpage_readpage, __mpage_writepage, block_read_full_folio,
block_write_full_page/_folio) and ext4 keeps a private copy of the read side,
ext4_mpage_readpages.

Every test first asserts that its provocation happened (the file has the
extents it needs, the mpage function it is about ran in that step, the fault
fired) and fails loudly if not: a row never passes vacuously. What is asserted
comes from the run model's queries and checks (blkrig_model); the tests only
pick requests and compare. Rows that use the same scenario share one run per
kernel (mpage_scenarios.py), so a kernel costs twelve boots (ten without the
ext2 module).

Views: M1, M2 and M4 run twice, with the queue at nomerges=2 and scheduler
none (each bio mpage built is one device request) and with the default
merging (mq-deadline, nomerges=0), where the guest's bios inside each request
(correlated from block_bio_queue/block_rq_issue) tell the same story.

Known deviation, reported and kept visible: M12 on kernels that read ext2
images through ext4_mpage_readpages issues the indirect block before blocks
0-11 (xfail, strict: a kernel that honours BH_Boundary turns it into a
failure to look at). The fs/mpage.c variant of M12 reads the same layout
through fs/ext2, built for the catalogue kernel as module ext2mpage
(`blkrig kernel fetch NAME --extra-modules ext2`), and is skipped, naming
that command, on a kernel without it.

Out of reach through a device, so not tested here:
- mpage_alloc's halving of nr_vecs under PF_MEMALLOC (memory-pressure
  allocation inside the guest, invisible in the requests);
- map_buffer_to_page (needs a filesystem whose get_block fills buffers that
  mpage then reuses; no stock filesystem drives it observably).
"""

import json
import subprocess
from pathlib import Path

import pytest

import blkrig_test as bt
from blkrig_test.plugin import import_model, to_toml

import mpage_scenarios as sc

model = import_model()

PAGE = sc.PAGE
READ_AHEAD = 128 * 1024      # read_ahead_kb, the kernel's default
MAX_SECTORS = 1280 * 1024    # max_sectors_kb the guest reports for blkrig-device


# ---------------------------------------------------------------- helpers

@pytest.fixture
def scenario_run(blkrig_run, blkrig_kernel):
    """A scenario's run on the kernel under test, shared by every row that uses it."""
    def get(s: sc.Scenario):
        return blkrig_run(s.doc, blkrig_kernel, share=s.name)
    return get


def expect(run, **expectation):
    """One [[expect]] table checked by the run model; fails with its message."""
    r = model.check(run, expectation)
    assert r.ok, r.message
    return r


def step(run, s: sc.Scenario, label: str, ok: bool = True):
    st = run.step(s.steps[label])
    assert st.ran, f"step {st.index} ({label}) did not run"
    if ok:
        assert st.ok, f"step {st.index} {st.op} {st.path} failed: {st.error} ({st.call})"
    return st


def sector_of(run, path: str, offset: int) -> int:
    """The device sector holding a byte of the file (from the run's extents)."""
    for off, sector, sectors in run.extents(path):
        if off <= offset < off + sectors * 512:
            return sector + (offset - off) // 512
    raise AssertionError(f"{path} has no block at offset {offset}: extents {run.extents(path)}")


def describe(reqs) -> str:
    return ", ".join(f"seq {r.seq} {r.op} {r.sector}+{r.sectors} @{r.file_offset}" for r in reqs[:12]) + \
        (f", ... ({len(reqs)} in all)" if len(reqs) > 12 else "")


def one_of_hit(run, index: int, names: list[str]) -> str:
    hit = run.functions_hit(step=index)
    found = [n for n in names if n in hit]
    assert found, f"step {index}: none of {names} ran (hit: {sorted(hit)})"
    return found[0]


def called_from(run, index: int, function: str, parents: set[str]) -> bool:
    return any(e.get("function") == function and e.get("parent") in parents
               for e in run.guest_events(step=index, event="function"))


def kernel_config(kernel: str) -> str:
    for d in (Path(kernel), bt.kernel_dir(kernel)):
        if (d / "config").is_file():
            return (d / "config").read_text(errors="replace")
    return ""


def _kernel_name(kernel: str) -> str:
    return Path(kernel).name if "/" in kernel else kernel


def boot_json(res) -> dict:
    return json.loads((res.dir / "boot.json").read_text())


views = pytest.mark.parametrize("view", list(sc.VIEWS))


# ---------------------------------------------------------------- M1

@views
def test_m1_largest_possible_bios(scenario_run, view):
    """M1: a sequential read of a contiguous file reaches the device in multi-page requests, never one per page.

    Seed: "constructs largest possible bios".
    """
    s = sc.read(view)
    res = scenario_run(s)
    run, path = res.run, "/mnt/f1.bin"
    st = step(run, s, "read_f1")
    assert len(run.extents(path)) == 1, f"precondition: {path} should be contiguous: {run.extents(path)}"
    sel = dict(step=st.index, file=path, op="read")
    expect(run, **sel, functions_hit=["mpage_readahead", "do_mpage_readpage"])
    expect(run, **sel, covers_file=True)
    expect(run, **sel, requests="multi_page")
    # Bounded by the readahead window when each bio is a request, by the
    # queue's max_sectors when the elevator may merge them.
    expect(run, **sel, max_request_bytes=READ_AHEAD if view == "nomerges" else MAX_SECTORS)
    expect(run, **sel, request_count_max=(4 << 20) // (8 * PAGE))  # 8 pages a request on average at least
    reqs = run.file_requests(path, step=st.index, op="read")
    if view == "nomerges":
        # One bio, one request: the sizes above are mpage's own.
        expect(run, **sel, merge_ratio_min=1.0, merge_ratio_max=1.0)
    else:
        # The guest's bios inside each merged request were already multi-page:
        # the elevator did not have to build them.
        bios = [b for r in reqs for b in r.bios]
        assert bios, f"no guest bios were correlated with {path}'s requests: {run.findings[:3]}"
        small = [b for b in bios if b[1] * 512 <= PAGE]
        assert len(small) <= 1, f"single-page guest bios: {small[:8]} (of {len(bios)})"


# ---------------------------------------------------------------- M2

@views
def test_m2_bio_sent_off_at_extent_gap(scenario_run, view):
    """M2: a bio is submitted where the next block is not adjacent: requests split exactly at the extent gap.

    Seed: "Do we need to send this BIO off first?".
    """
    s = sc.read(view)
    run, path = scenario_run(s).run, "/mnt/frag.bin"
    st = step(run, s, "read_frag")
    ext = run.extents(path)
    assert len(ext) == 2, f"precondition: {path} should have 2 extents: {ext}"
    (o1, s1, n1), (o2, s2, _) = ext
    assert o2 == sc.FRAG_SPLIT and s1 + n1 != s2, f"precondition: the extents should not be adjacent: {ext}"
    sel = dict(step=st.index, file=path, op="read")
    expect(run, **sel, functions_hit=["mpage_readahead", "do_mpage_readpage"])
    expect(run, **sel, covers_file=True)
    expect(run, **sel, split_at_extents=True)
    reqs = run.file_requests(path, step=st.index, op="read")
    ends = [i for i, r in enumerate(reqs) if r.end_sector == s1 + n1]
    assert ends, f"no request ends at the first extent's end (sector {s1 + n1}): {describe(reqs)}"
    i = ends[0]
    assert i + 1 < len(reqs) and reqs[i + 1].sector == s2, \
        f"the request after seq {reqs[i].seq} does not start the second extent (sector {s2}): {describe(reqs[i:i + 3])}"
    # The gap is inside a readahead window: the two requests around it are the
    # two halves of one window's bio, cut at the gap.
    both = reqs[i].bytes + reqs[i + 1].bytes
    assert both <= READ_AHEAD, f"seq {reqs[i].seq} and {reqs[i + 1].seq} carry {both} bytes: more than one window"


# ---------------------------------------------------------------- M3

def test_m3_discontiguous_page_falls_back_to_buffer_heads(scenario_run):
    """M3: the page spanning a discontiguity is read one block per request through block_read_full_folio.

    Seed: "If a page does not map to a contiguous run of blocks then it simply falls back to
    block_read_full_page()".
    """
    s = sc.frag512()
    run, path = scenario_run(s).run, "/mnt/c.bin"
    st = step(run, s, "read")
    ext = run.extents(path)
    assert len(ext) == 2 and ext[0][0] == 0 and ext[0][2] * 512 == sc.C_SPLIT and ext[0][1] + ext[0][2] != ext[1][1], \
        f"precondition: page 0 of {path} should map to two runs of blocks (first {sc.C_SPLIT} bytes): {ext}"
    sel = dict(step=st.index, file=path, op="read")
    expect(run, **sel, functions_hit=["do_mpage_readpage", "block_read_full_folio"])
    assert called_from(run, st.index, "block_read_full_folio", {"do_mpage_readpage"}), \
        "block_read_full_folio ran, but not as do_mpage_readpage's fallback"
    expect(run, **sel, covers_file=True)
    reqs = run.file_requests(path, step=st.index, op="read")
    page0 = [r for r in reqs if r.file_offset < PAGE]
    assert [(r.file_offset, r.bytes) for r in page0] == [(k * 512, 512) for k in range(PAGE // 512)], \
        f"page 0 should be read one 512-byte block per request: {describe(page0)}"
    rest = [r for r in reqs if r.file_offset >= PAGE]
    assert rest and all(r.file_offset % PAGE == 0 and r.bytes % PAGE == 0 for r in rest), \
        f"the pages after the discontiguity should be read in page multiples: {describe(rest)}"
    assert max(r.bytes for r in rest) > PAGE, f"no multi-page request after page 0: {describe(rest)}"


# ---------------------------------------------------------------- M4

@views
def test_m4_no_partial_pages_except_at_eof(scenario_run, view):
    """M4: read requests are whole pages of the file, except the last, which ends at the file's last block.

    Seed: "never puts partial pages into a BIO (except for end-of-file)".
    """
    s = sc.read(view)
    run, path = scenario_run(s).run, "/mnt/tail.bin"
    st = step(run, s, "read_tail")
    size = run.file_size(path)
    assert size == sc.TAIL_SIZE and size % PAGE != 0, f"precondition: {path} size {size} should not be a page multiple"
    assert len(run.extents(path)) == 1, f"precondition: {path} should be contiguous: {run.extents(path)}"
    sel = dict(step=st.index, file=path, op="read")
    expect(run, **sel, functions_hit=["do_mpage_readpage"])
    expect(run, **sel, covers_file=True)
    expect(run, **sel, file_offset_multiple_of=PAGE)
    expect(run, **sel, request_bytes_multiple_of=PAGE)  # the one ending the file excepted
    reqs = run.file_requests(path, step=st.index, op="read")
    last = max(reqs, key=lambda r: r.file_offset)
    last_block_end = (size + 511) // 512 * 512  # vfat maps 512-byte blocks
    assert last.file_offset + last.bytes == last_block_end, \
        f"the last request (seq {last.seq}, file offset {last.file_offset}, {last.bytes} bytes) should end at the " \
        f"file's last block (offset {last_block_end}), not at the page end ({(size + PAGE - 1) // PAGE * PAGE})"


# ---------------------------------------------------------------- M5

def test_m5_holes_no_io_and_per_block_after_a_hole(scenario_run):
    """M5: pages that are wholly holes cost no read; a page with data after a hole is read per block.

    Seed: "first_hole == 0" (zeroed, uptodate, no I/O) and "hole -> non-hole" (fall back).
    """
    s = sc.sparse()
    run, path = scenario_run(s).run, "/mnt/s.bin"
    st = step(run, s, "read")
    ext = run.extents(path)
    (hole0_off, hole0_len), (hole1_off, hole1_len) = sc.SPARSE_HOLES
    assert ext and ext[0][0] == hole0_off + hole0_len, f"precondition: {path} should start with a {hole0_len}-byte hole: {ext}"
    assert any(o == hole1_off + hole1_len for o, _, _ in ext) and all(not (o <= hole1_off < o + n * 512) for o, _, n in ext), \
        f"precondition: {path} should have a hole at [{hole1_off}, {hole1_off + hole1_len}) followed by data: {ext}"
    read_fn = one_of_hit(run, st.index, ["ext4_mpage_readpages", "do_mpage_readpage"])
    sel = dict(step=st.index, file=path, op="read")
    expect(run, **sel, functions_hit=["block_read_full_folio"])
    assert called_from(run, st.index, "block_read_full_folio", {read_fn}), \
        f"block_read_full_folio ran, but not as {read_fn}'s fallback"
    expect(run, **sel, covers_file=True)
    reqs = run.file_requests(path, step=st.index, op="read")
    data = sum(n * 512 for _, _, n in ext)
    got = sum(r.file_bytes for r in reqs)
    assert got == data, f"{got} bytes of {path} read for {data} bytes of data: hole pages must not be read, data once"
    assert min(r.file_offset for r in reqs) >= hole0_off + hole0_len, f"a read inside the leading hole: {describe(reqs)}"
    page = hole1_off // PAGE * PAGE
    in_page = [r for r in reqs if page <= r.file_offset < page + PAGE]
    block = 1024
    want = [(o, block) for o in range(hole1_off + hole1_len, page + PAGE, block)]
    assert [(r.file_offset, r.bytes) for r in in_page] == want, \
        f"page {page // PAGE} (hole, then data) should be read one {block}-byte block per request: {describe(in_page)}"


# ---------------------------------------------------------------- M6

def test_m6_read_error_fails_pages_then_retries_one(scenario_run):
    """M6: a failed read request fails its pages, each is retried alone, read() gets the bytes before EIO.

    Seed: read completion "!uptodate": the page is not uptodate, the error reported. Also: pages
    outside the fault still read, and once the fault is gone the same read succeeds.
    """
    s = sc.read_eio()
    run, path = scenario_run(s).run, "/mnt/f.bin"
    st = step(run, s, "read_eio", ok=False)
    assert len(run.extents(path)) == 1, f"precondition: {path} should be contiguous: {run.extents(path)}"
    bad = sector_of(run, path, sc.EIO_OFFSET)
    bad_range = (bad, bad + PAGE // 512)
    expect(run, step=st.index, file=path, op="read", functions_hit=["mpage_readahead", "do_mpage_readpage"],
           faulted_requests_min=1)
    # The device failed exactly the requests holding the bad sectors.
    for label in ("read_eio", "read_after"):
        for r in run.requests(step=s.steps[label], op="read"):
            hits = r.sector < bad_range[1] and bad_range[0] < r.end_sector
            assert hits == (r.fault_action == "ioerr"), f"fault attribution wrong for seq {r.seq} {r.sector}+{r.sectors}"
    first = run.request_at(path, sc.EIO_OFFSET, op="read", step=st.index)
    assert first is not None and first.status == "ioerr", f"precondition: the first read of the bad page should fail: {first}"
    assert first.bytes > PAGE, f"precondition: the failing request should be a multi-page readahead request: {first}"
    # read() got the bytes before the bad page, then EIO.
    assert (st.ret, st.error, st.bytes) == (-1, "EIO", sc.EIO_OFFSET), f"read: {st.ret} {st.error} {st.bytes} bytes"
    # Every page of the failed request up to the bad one is read again alone.
    later = [r for r in run.file_requests(path, step=st.index, op="read") if r.seq > first.seq]
    singles = {(r.file_offset, r.status) for r in later if r.bytes == PAGE}
    for off in range(first.file_offset, sc.EIO_OFFSET, PAGE):
        assert (off, "ok") in singles, f"page at {off} of failed seq {first.seq} was not retried alone: {describe(later)}"
    assert (sc.EIO_OFFSET, "ioerr") in singles, f"the bad page was not retried alone: {describe(later)}"
    # Pages outside the fault still read, including the rest of the failed request.
    after = step(run, s, "read_after")
    assert after.bytes == 64 * 1024
    singles_after = {r.file_offset for r in run.file_requests(path, step=after.index, op="read") if r.status == "ok"}
    failed_end = first.file_offset + first.bytes
    for off in range(96 * 1024, min(failed_end, 160 * 1024), PAGE):
        assert off in singles_after, f"page at {off} (in failed seq {first.seq}) was not read again in step {after.index}"
    # No sticky poison: the rule is gone, the same file reads whole and right.
    clean = step(run, s, "read_clean")
    assert clean.bytes == 256 * 1024
    expect(run, step=clean.index, file=path, op="read", faulted_requests_max=0, status="ok", covers_file=True)


# ---------------------------------------------------------------- M7

def test_m7_write_error_reported_once_per_open_file(scenario_run):
    """M7: a failed writeback is in the trace and fsync() reports EIO once per open file, then 0.

    Seed: write completion "SetPageError" + "AS_EIO" on the mapping. Also: a descriptor opened
    before the failure sees the EIO once too.
    """
    s = sc.write_eio()
    run, path = scenario_run(s).run, "/mnt/f.bin"
    f1 = step(run, s, "fsync1", ok=False)
    sel = dict(step=f1.index, file=path, op="write")
    expect(run, **sel, functions_hit=["mpage_writepages", "__mpage_writepage"])
    expect(run, **sel, covers_file=True, faulted_requests_min=1, status="ioerr")
    failed = run.file_requests(path, step=f1.index, op="write")
    assert all(r.fault_action == "ioerr" for r in failed), f"a write failed without the rule: {describe(failed)}"
    results = [(st.ret, st.error) for st in (step(run, s, k, ok=False) for k in ("fsync1", "fsync2", "fsync_early1", "fsync_early2"))]
    assert results == [(-1, "EIO"), (0, ""), (-1, "EIO"), (0, "")], \
        f"fsync results (writer twice, early descriptor twice): {results}"
    # The failed pages were not written again: the error was reported, not retried.
    for k in ("fsync2", "fsync_early1", "fsync_early2"):
        expect(run, step=s.steps[k], file=path, op="write", requests="none")


# ---------------------------------------------------------------- M8

def test_m8_writeback_multi_page_ascending(scenario_run):
    """M8: sync writeback of a contiguous dirty range goes out as multi-page writes in ascending order.

    Seed: writeback "direct-to-BIO" for contiguous mapped pages.
    """
    s = sc.write()
    run, path = scenario_run(s).run, "/mnt/big.bin"
    w, fs = step(run, s, "write"), step(run, s, "fsync")
    assert w.bytes == 4 << 20 and len(run.extents(path)) == 1, f"precondition: 4 MiB written into a contiguous file"
    expect(run, step=w.index, file=path, op="write", requests="none")  # buffered: nothing written before fsync
    sel = dict(step=fs.index, file=path, op="write")
    expect(run, **sel, functions_hit=["mpage_writepages", "__mpage_writepage"])
    expect(run, **sel, covers_file=True, status="ok")
    expect(run, **sel, requests="multi_page")
    expect(run, **sel, ascending=True)
    expect(run, **sel, split_at_extents=True)  # one ascending run over the one extent, each sector written once


# ---------------------------------------------------------------- M9

def test_m9_page_straddling_isize_zeroed(scenario_run, blkrig_disk):
    """M9: the bytes after i_size in the file's last written block are zero on the device.

    Seed: "The page straddles i_size. It must be zeroed out". The page was filled beyond EOF
    through mmap; the image is read on the host after the run.
    """
    s = sc.write()
    res = scenario_run(s)
    run, path = res.run, "/mnt/tail.bin"
    mm = step(run, s, "mmap")
    size = run.file_size(path)
    assert size == sc.STRADDLE_SIZE and mm.bytes == PAGE, f"precondition: mmap_write of the page holding EOF ({mm.bytes} bytes)"
    last = run.request_at(path, size - 1, op="write", step=mm.index)
    assert last is not None and last.status == "ok", \
        f"precondition: the block holding EOF was not written in step {mm.index}: {run.file_requests(path, step=mm.index)}"
    expect(run, step=mm.index, functions_hit=["__mpage_writepage"])
    sector, cut = sector_of(run, path, size - 1), size % 512
    with open(res.dir / "disk.img", "rb") as img:
        img.seek(sector * 512)
        block = img.read(512)
    # The mmap'd bytes reached the device: the part before EOF differs from what the image was built with.
    original = blkrig_disk(json.loads((res.dir / "disk-spec.json").read_text()), name="original")
    with open(original.image, "rb") as img:
        img.seek(sector * 512)
        before = img.read(512)
    assert block[:cut] != before[:cut], f"precondition: sector {sector} still holds the original bytes before EOF"
    tail = block[cut:]
    assert tail == bytes(len(tail)), \
        f"sector {sector} (written by seq {last.seq}): bytes after i_size {size} are not zero: {tail[:32].hex()}..."


# ---------------------------------------------------------------- M10

def test_m10_confused_page_written_per_block(scenario_run):
    """M10: a dirty page whose blocks are not contiguous is written one block per request, not in an mpage bio.

    Seed: partially mapped page -> "confused" -> ->writepage.
    """
    s = sc.frag512()
    run, path = scenario_run(s).run, "/mnt/c.bin"
    w, fs = step(run, s, "write"), step(run, s, "fsync")
    ext = run.extents(path)
    assert w.bytes == 16 * 1024 and ext[0][2] * 512 == sc.C_SPLIT, f"precondition: page 0 spans two runs of blocks: {ext}"
    expect(run, step=fs.index, functions_hit=["mpage_writepages", "__mpage_writepage"])
    fallback = one_of_hit(run, fs.index, ["block_write_full_folio", "block_write_full_page"])
    assert called_from(run, fs.index, fallback, {"__mpage_writepage", "mpage_writepages", "write_cache_pages"}), \
        f"{fallback} ran, but not from mpage's writeback"
    writes = run.file_requests(path, step=fs.index, op="write")
    page0 = [r for r in writes if r.file_offset < PAGE]
    assert [(r.file_offset, r.bytes) for r in page0] == [(k * 512, 512) for k in range(PAGE // 512)], \
        f"page 0 should be written one 512-byte block per request: {describe(page0)}"
    rest = [r for r in writes if r.file_offset >= PAGE]
    assert sum(r.bytes for r in rest) == 16 * 1024 - PAGE and max((r.bytes for r in rest), default=0) > PAGE, \
        f"pages 1-3 should go out in a multi-page bio: {describe(rest)}"


# ---------------------------------------------------------------- M11

def test_m11_fsync_data_before_flush(scenario_run):
    """M11: fsync()'s writes complete before the FLUSH is taken, the FLUSH before fsync() returns.

    Seed: "fsync() and msync() need to guarantee that all the data which was dirty at the time the
    call was made get new I/O started against them".
    """
    s = sc.write()
    res = scenario_run(s)
    run, path = res.run, "/mnt/big.bin"
    fs = step(run, s, "fsync")
    i = boot_json(res)["device_args"].index("--write-cache")
    assert boot_json(res)["device_args"][i + 1] == "on", "precondition: the device must advertise a volatile write cache"
    expect(run, step=fs.index, op="flush", request_count_min=1)
    expect(run, step=fs.index, file=path, op="write", covers_file=True)
    expect(run, step=fs.index, file=path, flush_after_writes=True)
    expect(run, step=fs.index, flush_after_writes=True)  # the metadata writes too


# ---------------------------------------------------------------- M12

_M12_DEVIATION = ("known deviation (docs/conformance.md, M12): ext4_mpage_readpages queues the indirect block "
                  "before blocks 0-11, the '12 0 1 2 ...' order BH_Boundary exists to prevent; it tests "
                  "relative_block == map.m_len, which does not hold when the mapping spans several pages")


def ext2_module(kernel: str) -> Path | None:
    """The fs/ext2 module fetch-debian --extra-modules ext2 built for the kernel, if any."""
    for d in (Path(kernel), bt.kernel_dir(kernel)):
        ko = d / "modules" / "extra" / "ext2mpage.ko"
        if ko.is_file():
            return ko
    return None


# (read path, ext2 block size): ext4's copy of mpage on the image ext4 reads
# as ext2, and fs/mpage.c through fs/ext2 with 1 KiB blocks (four blocks a
# page: the boundary falls inside page 2) and 4 KiB blocks (one a page).
M12_CASES = [("ext4_mpage_readpages", 1024), ("fs/mpage.c", 1024), ("fs/mpage.c", 4096)]


@pytest.mark.parametrize("read_path,block", M12_CASES, ids=[f"{p}-{b // 1024}k" for p, b in M12_CASES])
def test_m12_boundary_block_order(scenario_run, blkrig_kernel, request, read_path, block):
    """M12: an indirect-mapped read issues blocks 0-11, then the indirect block, then 12.., not "12 0 1 2 ...".

    Seed: BH_Boundary, "push what I/O you have currently accumulated".
    """
    driver = sc.EXT2_DRIVERS[read_path]
    if driver == "ext2" and ext2_module(blkrig_kernel) is None:
        name = _kernel_name(blkrig_kernel)
        config = kernel_config(blkrig_kernel)
        why = "has no CONFIG_EXT2_FS" if config and "CONFIG_EXT2_FS=" not in config else "has no ext2mpage module"
        pytest.skip(f"kernel {name} {why} and no fs/ext2 built for it: run `blkrig kernel fetch {name} --extra-modules ext2`")
    s = sc.ext2(driver, block)
    res = scenario_run(s)
    run, path = res.run, "/mnt/i.bin"
    st = step(run, s, "read")
    verdict = json.loads((res.dir / "verdict.json").read_text())
    assert verdict["fs_driver"]["driver"] == driver, f"precondition: the {driver} driver should mount the image: {verdict['fs_driver']}"
    hit = run.functions_hit(step=st.index)
    if read_path == "fs/mpage.c":
        # Through fs/mpage.c itself, never ext4's private copy.
        assert {"mpage_readahead", "do_mpage_readpage"} <= hit and "ext4_mpage_readpages" not in hit, \
            f"precondition: the read should run mpage_readahead and do_mpage_readpage, not ext4_mpage_readpages (hit: {sorted(hit)})"
    else:
        assert "ext4_mpage_readpages" in hit, f"precondition: the ext2 image was not read through ext4_mpage_readpages (hit: {sorted(hit)})"
    extents = json.loads((res.dir / "extents.json").read_text())
    meta = next(f for f in extents["files"] if f["path"] == "/i.bin")["metadata"]
    ind = [m for m in meta if m["kind"] == "IND"]
    ext = run.extents(path)
    spb = block // 512
    assert len(ind) == 1 and ext[0][0] == 0 and ext[0][2] == 12 * spb, \
        f"precondition: blocks 0-11 in one extent, one indirect block: extents {ext}, metadata {meta}"
    ind_sector = ind[0]["sector"]
    assert ext[0][1] + ext[0][2] == ind_sector, f"precondition: the indirect block should follow block 11 on disk: {ext}, {meta}"
    reads = run.requests(step=st.index, op="read")
    ind_req = [r for r in reads if r.sector <= ind_sector < r.end_sector]
    assert ind_req, f"precondition: the indirect block (sector {ind_sector}) was not read in step {st.index}: " \
                    f"the mapping was cached ({describe(reads)})"
    first = run.request_at(path, 0, op="read", step=st.index)
    twelve = run.request_at(path, 12 * block, op="read", step=st.index)
    assert first and twelve, "precondition: blocks 0 and 12 were read"
    order = sorted([(first.seq, f"blocks 0-11 R {first.sector}+{first.sectors}"),
                    (ind_req[0].seq, f"indirect R {ind_sector}+{ind_req[0].sectors}"),
                    (twelve.seq, f"block 12 R {twelve.sector}+{twelve.sectors}")])
    observed = "observed on " + _kernel_name(blkrig_kernel) + ": " + ", then ".join(f"{what} (seq {seq})" for seq, what in order)
    if read_path == "ext4_mpage_readpages":
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"{_M12_DEVIATION}; {observed}"))
    assert first.seq < ind_req[0].seq < twelve.seq, f"{read_path}: {observed}; the seed wants blocks 0-11, the indirect block, block 12"


# ---------------------------------------------------------------- M13

def test_m13_requests_within_device_limits(scenario_run):
    """M13: no request exceeds seg_max segments or size_max per segment; a small seg_max splits reads more.

    Seed: "bio_add_page" fails -> submit, allocate a new bio.
    """
    small, base = sc.segmax(), sc.read("nomerges")
    res = scenario_run(small)
    run, path = res.run, "/mnt/f1.bin"
    args = boot_json(res)["device_args"]
    assert args[args.index("--seg-max") + 1] == str(sc.SEG_MAX) and args[args.index("--size-max") + 1] == str(sc.SIZE_MAX), \
        f"precondition: the device should offer seg_max {sc.SEG_MAX}, size_max {sc.SIZE_MAX}: {args}"
    st = step(run, small, "read_f1")
    sel = dict(step=st.index, file=path, op="read")
    expect(run, **sel, functions_hit=["do_mpage_readpage"])
    expect(run, **sel, covers_file=True)
    expect(run, max_segments=sc.SEG_MAX)  # every request of the run
    expect(run, **sel, max_request_bytes=sc.SEG_MAX * sc.SIZE_MAX)
    big = [r for r in run.requests() if any(n > sc.SIZE_MAX for n in r.seg_lens)]
    assert not big, f"segments larger than size_max {sc.SIZE_MAX}: {[(r.seq, r.seg_lens) for r in big[:5]]}"
    brun = scenario_run(base).run
    bst = step(brun, base, "read_f1")
    expect(brun, max_segments=126)
    n_small = len(run.file_requests(path, step=st.index, op="read"))
    n_base = len(brun.file_requests(path, step=bst.index, op="read"))
    assert n_small > n_base and n_small >= (4 << 20) // (sc.SEG_MAX * sc.SIZE_MAX), \
        f"{n_small} requests with seg_max {sc.SEG_MAX} against {n_base} with the default geometry"


# ---------------------------------------------------------------- M14

def test_m14_completions_in_any_order(scenario_run):
    """M14: with completions held back and overtaken, every byte read is still right.

    Seed: bios "which can complete in any order (or at the same time)".
    """
    s = sc.delay()
    res = scenario_run(s)
    run, path = res.run, "/mnt/f.bin"
    st = step(run, s, "read")
    assert boot_json(res)["num_queues"] == 2, "precondition: the device should offer two queues"
    sel = dict(step=st.index, file=path, op="read")
    expect(run, **sel, functions_hit=["mpage_readahead", "do_mpage_readpage"])
    expect(run, **sel, faulted_requests_min=1, covers_file=True, status="ok")
    reqs = run.requests(step=st.index)
    delayed = [r for r in reqs if r.fault_action == "delay"]
    assert delayed and all(r.t_complete_ns - r.t_submit_ns >= 200_000_000 for r in delayed), \
        f"precondition: the delayed requests should be held 200 ms: {describe(delayed)}"
    overtaken = [(a.seq, b.seq) for a in delayed for b in reqs if b.seq > a.seq and b.t_complete_ns < a.t_complete_ns]
    assert overtaken, f"precondition: no request completed before an earlier one: {describe(reqs)}"
    files = json.loads((res.dir / "extents.json").read_text())["files"]
    want = next(f["xxh128"] for f in files if f["path"] == "/f.bin")
    assert st.bytes == 4 << 20 and st.result.get("xxh128") == want, \
        f"read {st.bytes} bytes, xxh128 {st.result.get('xxh128')}, file {want} (completions overtaken: {overtaken[:4]})"


# ---------------------------------------------------------------- checks name the offender

def _one_page_expectation(scenario_run):
    """The M1 read and a deliberately wrong expectation about it: "requests are
    one page" (max_request_bytes = 4096), and the request that must be named."""
    s = sc.read("nomerges")
    res = scenario_run(s)
    run, path = res.run, "/mnt/f1.bin"
    st = step(run, s, "read_f1")
    first = next(r for r in run.file_requests(path, step=st.index, op="read") if r.bytes > PAGE)
    return res, {"step": st.index, "file": path, "op": "read", "max_request_bytes": PAGE}, first


def test_wrong_expectation_fails_naming_the_request(scenario_run):
    """A wrong expectation fails through blkrig_model.check with a message
    naming the first offending request by seq and sector."""
    res, wrong, first = _one_page_expectation(scenario_run)
    r = model.check(res.run, wrong)
    assert not r.ok, f"a wrong expectation held: {r.message}"
    assert r.offender_seq == first.seq, r.message
    assert f"seq {first.seq}" in r.message and f"sector {first.sector}" in r.message, r.message


def test_wrong_expectation_fails_blkrig_check(scenario_run, tmp_path):
    """The same wrong expectation in a file: `blkrig check RUN_DIR EXPECT.toml`
    exits 1 and names the offending request by seq and sector."""
    res, wrong, first = _one_page_expectation(scenario_run)
    toml = tmp_path / "one-page.toml"
    toml.write_text(to_toml({"expect": [wrong]}))
    cli = subprocess.run([str(bt.blkrig()), "check", str(res.dir), str(toml)], capture_output=True, text=True, timeout=120)
    out = cli.stdout + cli.stderr
    assert cli.returncode == 1, f"blkrig check {res.dir} {toml} exited {cli.returncode}, expected 1: {out}"
    assert f"seq {first.seq}" in out and f"sector {first.sector}" in out, out
