"""mkinitramfs --append-to: a run's own files follow the cached gzip'd part
as a second, uncompressed newc archive that starts on a 4-byte boundary
(where the kernel looks for it), with its directories, the files' bytes,
owner 0 and a trailer; the first part is left byte for byte as it was; bad
use names what is wrong and leaves the file alone."""

import gzip
import subprocess
import zlib

import pytest

import blkrig_test as bt

MKINITRAMFS = bt.REPO / "guest-driver" / "image" / "mkinitramfs"


def newc_entries(data: bytes) -> list[dict]:
    """The entries of one newc archive, up to and without its trailer."""
    out, at = [], 0
    while True:
        assert data[at:at + 6] == b"070701", f"no newc magic at {at}"
        fields = [int(data[at + 6 + 8 * i:at + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, size, namesize = fields[1], fields[2], fields[3], fields[6], fields[11]
        name_at = at + 110
        name = data[name_at:name_at + namesize - 1].decode()
        body_at = (name_at + namesize + 3) & ~3
        body = data[body_at:body_at + size]
        at = (body_at + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append({"name": name, "mode": mode, "uid": uid, "gid": gid, "body": body})


def split_archive(image: bytes) -> tuple[bytes, bytes, bytes]:
    """(the gzip'd part, the zeros after it, the rest)."""
    d = zlib.decompressobj(wbits=31)
    d.decompress(image)
    rest = d.unused_data
    first = image[:len(image) - len(rest)]
    stripped = rest.lstrip(b"\0")
    return first, rest[:len(rest) - len(stripped)], stripped


@pytest.fixture
def base(tmp_path):
    """A gzip'd newc archive of an odd length, so that padding is needed."""
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "x").write_bytes(b"x" * 5)
    cpio = subprocess.run("find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet", shell=True, cwd=root,
                          capture_output=True, check=True).stdout
    for level in range(1, 10):
        data = gzip.compress(cpio, compresslevel=level, mtime=0)
        if len(data) % 4:
            break
    assert len(data) % 4, "no gzip level gave an unaligned length"
    path = tmp_path / "initrd.gz"
    path.write_bytes(data)
    return path


def test_files_follow_as_an_aligned_newc_archive(base, tmp_path):
    before = base.read_bytes()
    (tmp_path / "run.json").write_text('{"version": 1}\n')
    (tmp_path / "other").write_bytes(b"\x00\x01\x02")
    r = subprocess.run([MKINITRAMFS, "--append-to", base, "--file", f"{tmp_path / 'run.json'}:/etc/blkrig/run.json",
                        "--file", f"{tmp_path / 'other'}:/other"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first, zeros, second = split_archive(base.read_bytes())
    assert first == before
    assert set(zeros) <= {0} and (len(first) + len(zeros)) % 4 == 0 and len(zeros) < 4
    entries = {e["name"]: e for e in newc_entries(second)}
    assert list(entries) == ["etc", "etc/blkrig", "etc/blkrig/run.json", "other"]
    assert entries["etc/blkrig/run.json"]["body"] == b'{"version": 1}\n'
    assert entries["other"]["body"] == b"\x00\x01\x02"
    assert all(e["uid"] == 0 and e["gid"] == 0 for e in entries.values())
    assert entries["etc/blkrig"]["mode"] & 0o170000 == 0o040000


def test_the_same_files_append_the_same_bytes(base, tmp_path):
    (tmp_path / "run.json").write_text("{}\n")
    copy = tmp_path / "copy.gz"
    copy.write_bytes(base.read_bytes())
    for target in (base, copy):
        subprocess.run([MKINITRAMFS, "--append-to", target, "--file", f"{tmp_path / 'run.json'}:/etc/blkrig/run.json"], check=True,
                       capture_output=True)
    assert base.read_bytes() == copy.read_bytes()


@pytest.mark.parametrize("args, says", [
    (["--module", "vfat"], "--append-to takes only --file"),
    ([], "--append-to needs at least one --file"),
    (["--file", "/nonexistent/run.json:/etc/run.json"], "--file source /nonexistent/run.json not found"),
    (["--file", "{src}:relative"], "--file wants SRC:/ABSOLUTE/DEST"),
])
def test_bad_use_names_the_problem_and_leaves_the_file(base, tmp_path, args, says):
    src = tmp_path / "run.json"
    src.write_text("{}\n")
    before = base.read_bytes()
    r = subprocess.run([MKINITRAMFS, "--append-to", base, *[a.format(src=src) for a in args]], capture_output=True, text=True)
    assert r.returncode != 0
    assert says in r.stderr, r.stderr
    assert base.read_bytes() == before


def test_a_missing_initramfs_is_named(tmp_path):
    (tmp_path / "run.json").write_text("{}\n")
    r = subprocess.run([MKINITRAMFS, "--append-to", tmp_path / "none.gz", "--file", f"{tmp_path / 'run.json'}:/etc/run.json"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and f"initramfs {tmp_path / 'none.gz'} not found" in r.stderr, r.stderr
    assert not (tmp_path / "none.gz").exists()
