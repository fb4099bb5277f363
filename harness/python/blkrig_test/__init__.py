"""Shared helpers for blkrig's Python tests: locating the build, making vfat
images with the real mkfs.vfat/mtools, initramfs images with the project's
builder, booting with `blkrig boot`, and reading traces with `blkrig trace dump`."""

import hashlib
import json
import os
import random
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def build_dir() -> Path:
    d = Path(os.environ.get("BLKRIG_BUILD_DIR", REPO / "build"))
    if not (d / "harness" / "blkrig").exists():
        raise RuntimeError(f"no blkrig build in {d}: run ci/build or set BLKRIG_BUILD_DIR")
    return d


def blkrig() -> Path:
    return build_dir() / "harness" / "blkrig"


def device() -> Path:
    return build_dir() / "qemu-device" / "blkrig-device"


def default_kernel() -> str:
    """The catalogue's default kernel (guest-driver/kernels/catalogue.toml)."""
    with open(REPO / "guest-driver" / "kernels" / "catalogue.toml", "rb") as f:
        return tomllib.load(f)["default"]


def kernel_dir(name: str | None = None) -> Path:
    name = name or default_kernel()
    cache = Path(os.environ.get("BLKRIG_CACHE", "/var/cache/blkrig"))
    return cache / "kernels" / name


def seeded_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_vfat(path: Path, size_mib: int, files: dict[str, bytes]) -> None:
    """A vfat image made by mkfs.vfat, files copied in by mtools."""
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.vfat", str(path)], check=True, capture_output=True)
    for name, data in files.items():
        src = path.parent / f".mcopy-{name}"
        src.write_bytes(data)
        subprocess.run(["mcopy", "-i", str(path), str(src), f"::{name}"], check=True, capture_output=True)
        src.unlink()


def mtools_read(image: Path, name: str) -> bytes:
    r = subprocess.run(["mcopy", "-n", "-i", str(image), f"::{name}", "-"], check=True, capture_output=True)
    return r.stdout


def make_initramfs(out: Path, kernel: Path, init: Path, modules: list[str], files: dict[str, Path]) -> None:
    cmd = [str(REPO / "guest-driver" / "image" / "mkinitramfs"), "--kernel-dir", str(kernel), "--init", str(init), "--out", str(out)]
    for m in modules:
        cmd += ["--module", m]
    for dest, src in files.items():
        cmd += ["--file", f"{src}:{dest}"]
    subprocess.run(cmd, check=True, capture_output=True)


VFAT_MODULES = ["virtio_pci", "virtio_blk", "vfat", "nls_cp437", "nls_ascii"]


@dataclass
class Boot:
    returncode: int
    stdout: str
    stderr: str
    run_dir: Path

    @property
    def console(self) -> str:
        return (self.run_dir / "console.log").read_text(errors="replace")

    def guest_lines(self) -> list[str]:
        # The firmware's terminal reset precedes the first line; match anywhere.
        out = []
        for line in self.console.splitlines():
            i = line.find("BLKRIG ")
            if i >= 0:
                out.append(line[i:].strip())
        return out


def boot(run_dir: Path, initrd: Path, disk: Path, kernel: str | None = None, extra: list[str] = (),
         timeout: int = 180) -> Boot:
    cmd = [str(blkrig()), "boot", "--kernel", kernel or default_kernel(), "--initrd", str(initrd), "--disk", str(disk), "--out", str(run_dir),
           "--timeout", str(timeout), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
    return Boot(r.returncode, r.stdout, r.stderr, run_dir)


def trace_records(trace: Path) -> list[dict]:
    r = subprocess.run([str(blkrig()), "trace", "dump", str(trace), "--format", "jsonl"], check=True, capture_output=True, text=True)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def have_kernel(name: str | None = None) -> bool:
    return (kernel_dir(name) / "vmlinuz").exists()


def have(program: str) -> bool:
    return shutil.which(program) is not None


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line mentions text (a run folder, a URI): what a run left running."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(f"{cmdline.parent.name}: {args[:200]}")
    return found
