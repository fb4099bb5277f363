"""The kernel catalogue's extra modules without a download or a guest: bad
arguments to fetch-debian and `blkrig kernel fetch` are exit 2 naming what is
wrong (checked before anything is fetched), `blkrig kernel list` says whether
ext2 is built, and a scenario that asks for fs/ext2 on a kernel without it is
refused (exit 2, naming the line) before a disk is built."""

import os
import subprocess
from pathlib import Path

import pytest

import blkrig_test as bt

FETCH = Path(__file__).resolve().parents[3] / "guest-driver" / "kernels" / "fetch-debian"


def run(cmd, cache: Path, **kw):
    env = dict(os.environ, BLKRIG_CACHE=str(cache))
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60, env=env, **kw)


@pytest.mark.parametrize("args,says", [
    (["debian-bookworm-cloud", "--extra-modules", "ext3"], "unknown extra module 'ext3' (known: ext2)"),
    (["debian-bookworm-cloud", "--extra-modules=ext2,btrfs"], "unknown extra module 'btrfs' (known: ext2)"),
    (["debian-bookworm-cloud", "--extra-modules"], "--extra-modules needs a module name (known: ext2)"),
    (["debian-bookworm-cloud", "--extra-modules="], "--extra-modules needs a module name (known: ext2)"),
    (["no-such-kernel", "--extra-modules", "ext2"], "unknown kernel 'no-such-kernel'"),
])
def test_fetch_debian_bad_arguments_exit_2(tmp_path, args, says):
    r = run([FETCH, *args, "--cache", tmp_path], tmp_path)
    assert r.returncode == 2, f"fetch-debian {args}: exit {r.returncode}: {r.stderr}"
    assert says in r.stderr, r.stderr
    assert not (tmp_path / "kernels").exists(), "bad arguments must be refused before the cache is touched"


def test_blkrig_kernel_fetch_passes_extra_modules(tmp_path):
    r = run([bt.blkrig(), "kernel", "fetch", "debian-trixie", "--extra-modules", "ext2,zfs"], tmp_path)
    assert r.returncode == 2 and "unknown extra module 'zfs'" in r.stderr, r.stderr


def fake_kernel(cache: Path, name: str, ext2: bool) -> Path:
    d = cache / "kernels" / name
    (d / "modules").mkdir(parents=True)
    (d / "vmlinuz").write_bytes(b"")
    (d / "release").write_text("6.1.0-0-test\n")
    if ext2:
        (d / "modules" / "extra").mkdir()
        (d / "modules" / "extra" / "ext2mpage.ko").write_bytes(b"")
    return d


def test_kernel_list_says_whether_ext2_is_built(tmp_path):
    fake_kernel(tmp_path, "debian-bookworm-cloud", ext2=True)
    fake_kernel(tmp_path, "debian-trixie", ext2=False)
    r = run([bt.blkrig(), "kernel", "list"], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.strip()}
    assert "ext2: built (ext2mpage.ko)" in lines["debian-bookworm-cloud"], r.stdout
    assert "ext2: not built (blkrig kernel fetch debian-trixie --extra-modules ext2)" in lines["debian-trixie"], r.stdout
    assert "not fetched" in lines["debian-trixie-cloud"] and "ext2" not in lines["debian-trixie-cloud"], r.stdout


def test_ext2_driver_ext2_without_the_module_is_exit_2(tmp_path):
    kdir = fake_kernel(tmp_path, "debian-trixie", ext2=False)
    scen = tmp_path / "s.toml"
    scen.write_text('[disk]\nfs = "ext2"\n[guest]\next2_driver = "ext2"\n[[steps]]\nop = "mount"\n')
    r = run([bt.blkrig(), "run", scen, "--kernel", "debian-trixie", "--out", tmp_path / "run"], tmp_path)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    assert f"{scen}:4: guest.ext2_driver = \"ext2\" but kernel debian-trixie has no ext2 module" in r.stderr, r.stderr
    assert "--extra-modules ext2" in r.stderr, r.stderr
    assert not (tmp_path / "run" / "disk.img").exists(), "refused before the disk is built"
    assert kdir.exists()
