"""The kernel catalogue's extra modules without a download or a guest: bad
arguments to fetch-debian and `blkrig kernel fetch` are exit 2 naming what is
wrong (checked before anything is fetched), `blkrig kernel list` says whether
ext2 is built, and a scenario that asks for fs/ext2 on a kernel without it is
refused (exit 2, naming the line) before a disk is built."""

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

import blkrig_test as bt

FETCH = Path(__file__).resolve().parents[3] / "guest-driver" / "kernels" / "fetch-debian"


def run(cmd, cache: Path, env=None, **kw):
    env = env or dict(os.environ, BLKRIG_CACHE=str(cache))
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


def test_kernel_list_json_is_the_catalogue(tmp_path):
    fake_kernel(tmp_path, "debian-trixie", ext2=True)
    r = run([bt.blkrig(), "kernel", "list", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    listed = {k["name"]: k for k in json.loads(r.stdout)}
    with open(FETCH.parent / "catalogue.toml", "rb") as f:
        cat = tomllib.load(f)
    assert list(listed) == [k["name"] for k in cat["kernel"]]
    assert [n for n, k in listed.items() if k["default"]] == [cat["default"]] == [bt.default_kernel()]
    t = listed["debian-trixie"]
    assert t["fetched"] and t["release"] == "6.1.0-0-test" and t["extra_modules"] == {"ext2": True}, t
    assert t["dir"] == str(tmp_path / "kernels" / "debian-trixie")
    assert not listed["debian-trixie-cloud"]["fetched"] and listed["debian-trixie-cloud"]["release"] is None


def test_one_catalogue_file_drives_the_cli_and_fetch_debian(tmp_path):
    """A kernel added to catalogue.toml alone is listed, accepted by `blkrig
    kernel fetch` and by fetch-debian (both stop at the bad module name,
    before anything is downloaded); a broken catalogue is named."""
    src = tmp_path / "src"
    shutil.copytree(FETCH.parent, src / "guest-driver" / "kernels")
    cat = src / "guest-driver" / "kernels" / "catalogue.toml"
    cat.write_text(cat.read_text() + '\n[[kernel]]\nname = "test-kernel"\nsummary = "T"\nsuite = "trixie"\npackage = "p"\n')
    env = {"BLKRIG_SOURCE_DIR": str(src)}
    r = run([bt.blkrig(), "kernel", "list", "--json"], tmp_path, env=dict(os.environ, BLKRIG_CACHE=str(tmp_path), **env))
    assert r.returncode == 0 and "test-kernel" in [k["name"] for k in json.loads(r.stdout)], r.stdout + r.stderr
    r = run([bt.blkrig(), "kernel", "fetch", "test-kernel", "--extra-modules", "zfs"], tmp_path,
            env=dict(os.environ, BLKRIG_CACHE=str(tmp_path), **env))
    assert r.returncode == 2 and "unknown extra module 'zfs'" in r.stderr, r.stderr
    r = run([bt.blkrig(), "kernel", "fetch", "test-kernl"], tmp_path, env=dict(os.environ, BLKRIG_CACHE=str(tmp_path), **env))
    assert r.returncode == 2 and "unknown kernel 'test-kernl' (known: " in r.stderr and "test-kernel" in r.stderr, r.stderr
    r = run([src / "guest-driver" / "kernels" / "fetch-debian", "test-kernl", "--cache", tmp_path], tmp_path)
    assert r.returncode == 2 and "test-kernel" in r.stderr, r.stderr
    r = run([src / "guest-driver" / "kernels" / "fetch-debian", "--list"], tmp_path)
    assert r.returncode == 0 and r.stdout.split() == [bt.default_kernel(), "debian-trixie-cloud", "debian-trixie", "test-kernel"], r.stdout
    cat.write_text(cat.read_text().replace('default = "debian-bookworm-cloud"', 'default = "gone"'))
    r = run([bt.blkrig(), "kernel", "list"], tmp_path, env=dict(os.environ, BLKRIG_CACHE=str(tmp_path), **env))
    assert r.returncode == 3 and f"{cat}: default 'gone' is not a listed kernel" in r.stderr, r.stderr
    assert not (tmp_path / "kernels").exists()
