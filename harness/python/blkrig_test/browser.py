"""A page in Debian's headless Chromium, for the report tests: the DOM after
its scripts ran, its console messages, and a screenshot decoded to pixels
(PNG read here with zlib, no imaging library)."""

import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

BROWSER = "chromium-headless-shell"
WINDOW = (1400, 1300)


def available() -> bool:
    return shutil.which(BROWSER) is not None


def _run(page: Path, *mode: str, fragment: str = "", timeout: int = 60) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="blkrig-chromium-") as profile:
        # No network, no services: a fresh profile, nothing fetched in the background.
        cmd = [BROWSER, "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", f"--window-size={WINDOW[0]},{WINDOW[1]}", *mode, page.resolve().as_uri() + (f"#{fragment}" if fragment else "")]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@dataclass
class Loaded:
    dom: str
    console: list[str]  # the page's console messages (INFO:CONSOLE lines)
    stderr: str

    def attr(self, name: str) -> str | None:
        """An attribute of <body>, as the page's script left it."""
        body = re.search(r"<body\b[^>]*>", self.dom)
        m = body and re.search(rf'\s{re.escape(name)}="([^"]*)"', body.group(0))
        return m.group(1) if m else None


def load(page: Path) -> Loaded:
    r = _run(page, "--dump-dom")
    assert r.returncode == 0, f"{BROWSER} --dump-dom failed ({r.returncode}):\n{r.stderr[-3000:]}"
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line]
    return Loaded(r.stdout, console, r.stderr)


@dataclass
class Image:
    width: int
    height: int
    rgb: bytes  # 3 bytes a pixel, rows top to bottom

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = 3 * (y * self.width + x)
        return self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]

    def count(self, color: str, box: tuple[int, int, int, int] | None = None) -> int:
        """Pixels of exactly this colour ("#rrggbb"), within box (x, y, w, h) if given."""
        return self.count_near(color, 0, box)

    def count_near(self, color: str, tol: int, box: tuple[int, int, int, int] | None = None) -> int:
        """Pixels within tol of this colour in every channel (blended fills)."""
        want = bytes.fromhex(color.lstrip("#"))
        x0, y0, w, h = box or (0, 0, self.width, self.height)
        x1, y1 = min(self.width, x0 + w), min(self.height, y0 + h)
        n = 0
        for y in range(max(0, y0), y1):
            row = self.rgb[3 * (y * self.width + x0):3 * (y * self.width + x1)]
            for i in range(0, len(row), 3):
                if abs(row[i] - want[0]) <= tol and abs(row[i + 1] - want[1]) <= tol and abs(row[i + 2] - want[2]) <= tol:
                    n += 1
        return n


def decode_png(data: bytes) -> Image:
    """8-bit RGB or RGBA PNGs, as Chromium writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, f"unsupported PNG: depth {depth} type {ctype} interlace {interlace}"
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        if bpp == 3:
            out += line
        else:
            for i in range(0, stride, 4):
                out += line[i:i + 3]
    return Image(width, height, bytes(out))


def screenshot(page: Path, png: Path, fragment: str = "") -> Image:
    r = _run(page, f"--screenshot={png}", fragment=fragment)
    assert r.returncode == 0 and png.exists(), f"{BROWSER} --screenshot failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return decode_png(png.read_bytes())
