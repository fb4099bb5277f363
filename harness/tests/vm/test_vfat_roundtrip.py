"""A real guest kernel on blkrig-device: it reads a file from a vfat disk made
on the host, writes a new one, and the host, the guest and the trace agree."""

import pytest

import blkrig_test as bt

pytestmark = pytest.mark.skipif(not bt.have_kernel(), reason="default kernel not fetched: run ci/setup")

INIT = bt.REPO / "guest-driver" / "image" / "init-vfat-check.sh"
BIG = 4 << 20
NEW = 1 << 20


@pytest.fixture
def guest(tmp_path):
    big = bt.seeded_bytes(BIG, seed=1)
    new = bt.seeded_bytes(NEW, seed=2)
    disk = tmp_path / "disk.img"
    bt.make_vfat(disk, 64, {"big.bin": big})
    (tmp_path / "new.bin").write_bytes(new)
    initrd = tmp_path / "initrd.gz"
    bt.make_initramfs(initrd, bt.kernel_dir(), INIT, bt.VFAT_MODULES, {"/data/new.bin": tmp_path / "new.bin"})
    return disk, initrd, big, new


def check_trace(records, min_read, min_write):
    reqs = [r for r in records if r["kind"] == "request"]
    assert reqs, "the trace holds no requests"
    # Every request exactly once: sequence numbers 0..n-1 without gaps or repeats.
    assert sorted(r["seq"] for r in reqs) == list(range(len(reqs)))
    for r in reqs:
        assert r["t_complete_ns"] >= r["t_submit_ns"] > 0, f"request seq {r['seq']} has no completion"
        assert r["status"] == "ok", f"request seq {r['seq']} ({r['op']} sector {r['sector']}) failed: {r['status']}"
        if r["op"] in ("read", "write"):
            assert r["bytes"] == sum(r["seg_lens"]) and r["nsegs"] == len(r["seg_lens"])
    read = sum(r["bytes"] for r in reqs if r["op"] == "read")
    written = sum(r["bytes"] for r in reqs if r["op"] == "write")
    assert read >= min_read, f"{read} bytes read, the guest read a {min_read}-byte file"
    assert written >= min_write, f"{written} bytes written, the guest wrote a {min_write}-byte file"
    kinds = [r["kind"] for r in records]
    assert "incomplete" not in kinds and kinds[-1] == "end"
    return reqs


@pytest.mark.parametrize("queues", [1, 2])
def test_vfat_read_write_roundtrip(guest, tmp_path, queues):
    disk, initrd, big, new = guest
    b = bt.boot(tmp_path / "run", initrd, disk, extra=["--num-queues", str(queues)])
    assert b.returncode == 0, f"blkrig boot failed:\n{b.stderr}\n{b.console[-3000:]}"
    lines = b.guest_lines()
    assert f"BLKRIG md5 {bt.md5(big)}" in lines, f"guest saw another checksum: {lines}"
    assert "BLKRIG done" in lines, lines
    assert bt.mtools_read(disk, "new.bin") == new, "the file the guest wrote is not on the image byte for byte"
    check_trace(bt.trace_records(b.run_dir / "trace.bin"), BIG, NEW)
    assert "requests in" in b.stdout and "trace complete" in b.stdout


def test_snapshot_leaves_image_untouched(guest, tmp_path):
    disk, initrd, big, new = guest
    before = disk.read_bytes()
    b = bt.boot(tmp_path / "run", initrd, disk, extra=["--device-arg=--snapshot"])
    assert b.returncode == 0, f"blkrig boot failed:\n{b.stderr}"
    assert "BLKRIG done" in b.guest_lines()
    # The guest wrote (the trace says so), yet the image is as it was.
    reqs = check_trace(bt.trace_records(b.run_dir / "trace.bin"), BIG, NEW)
    assert any(r["op"] == "write" for r in reqs)
    assert disk.read_bytes() == before


def test_boot_failure_is_reported_with_console_tail(tmp_path):
    """A kernel that cannot find its init fails the boot clearly, within the timeout, leaving nothing running."""
    disk = tmp_path / "disk.img"
    bt.make_vfat(disk, 8, {})
    bogus = tmp_path / "initrd.gz"
    bogus.write_bytes(b"not a cpio archive")
    b = bt.boot(tmp_path / "run", bogus, disk, timeout=60)
    assert b.returncode == 3, b.stderr
    assert "guest_panic" in b.stderr and "Kernel panic" in b.stderr
