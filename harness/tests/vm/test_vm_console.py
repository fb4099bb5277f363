"""`blkrig vm` driven as a person would: a pseudo-terminal, a shell prompt in
the guest, a read typed at it, power off, and the read found in the trace."""

import contextlib
import os
import re
import pty
import select
import subprocess
import time

import pytest

import blkrig_test as bt

pytestmark = pytest.mark.skipif(not bt.have_kernel(), reason="default kernel not fetched: run ci/setup")


def read_until(fd, needle, timeout):
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} did not appear; console so far:\n{buf.decode(errors='replace')[-2000:]}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


@contextlib.contextmanager
def vm_console(*args):
    """`blkrig vm ARGS` on a pseudo-terminal; yields (process, terminal fd, banner up to the first prompt).
    The block ends by typing exit; the VM must then power off by itself."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(bt.blkrig()), "vm", *args], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    try:
        banner = read_until(master, b"BLKRIG-VM ready", 120)
        # The prompt may have come in the same read as the banner.
        if b"# " not in banner[banner.index(b"BLKRIG-VM ready"):]:
            read_until(master, b"# ", 30)
        yield proc, master, banner
        os.write(master, b"exit\r")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            # SIGTERM first: blkrig then stops QEMU and the device and removes its socket folder.
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        os.close(master)


def test_type_a_read_then_power_off(tmp_path):
    out = tmp_path / "vm"
    with vm_console("--out", str(out)) as (proc, master, banner):
        assert b"device trace (live)" in banner
        ctl = re.search(rb"device control: (\S+)", banner).group(1).decode()
        os.write(master, b"dd if=/mnt/f1.bin of=/dev/null bs=4k && echo READ-$((6*7))\r")
        read_until(master, b"READ-42", 60)
        # From another terminal, while the guest runs: a fault makes the guest's next direct read fail.
        add = subprocess.run([str(bt.blkrig()), "fault", "--control", ctl, "add", "ioerr op=read sector=0..7"], capture_output=True, text=True)
        assert add.returncode == 0, add.stderr
        os.write(master, b"dd if=/dev/vda of=/dev/null bs=4k count=1 iflag=direct || echo FAILED-$((6*7))\r")
        read_until(master, b"FAILED-42", 60)
        lst = subprocess.run([str(bt.blkrig()), "fault", "--control", ctl, "list"], capture_output=True, text=True)
        assert lst.returncode == 0 and " 1  ioerr op=read sector=0..7" in lst.stdout, lst.stdout
    assert proc.returncode == 0
    recs = bt.trace_records(out / "trace.bin")
    assert recs[-1]["kind"] == "end"
    assert sum(r["bytes"] for r in recs if r["kind"] == "request" and r["op"] == "read") >= 4 << 20
    assert (out / "console.log").read_text(errors="replace").count("READ-42") >= 1
    assert (out / "boot.json").exists()


def test_host_program_in_the_guest(tmp_path):
    """guest.programs puts a host program and its libraries into the guest: fio runs there."""
    if not bt.have("fio"):
        pytest.skip("fio is not installed (ci/setup installs it)")
    scen = tmp_path / "fio.toml"
    scen.write_text('[disk]\nfs = "raw"\nsize = "16M"\n[guest]\nprograms = ["fio"]\n[[steps]]\nop = "sync"\n')
    out = tmp_path / "vm"
    with vm_console("--scenario", str(scen), "--out", str(out)) as (proc, master, _):
        os.write(master, b"fio --name=r --filename=/dev/vda --rw=read --bs=64k --size=1M --direct=1 --minimal >/dev/null && echo FIO-OK\r")
        read_until(master, b"FIO-OK", 120)
    assert proc.returncode == 0
    reads = [r for r in bt.trace_records(out / "trace.bin") if r["kind"] == "request" and r["op"] == "read"]
    assert any(r["bytes"] == 65536 for r in reads), "fio's 64 KiB direct reads did not reach the device"
