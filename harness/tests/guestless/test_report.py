"""`blkrig report` on a run folder around a real device trace (our front end
drove blkrig-device with fault rules, no guest: guestless-run-folder), opened
in headless Chromium: the page draws without a console message, and its
screenshot shows each kind of request in its own colour."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import blkrig_test as bt
from blkrig_test import browser

pytestmark = pytest.mark.skipif(not browser.available(), reason=f"{browser.BROWSER} not installed: run ci/setup")

# report.js's colours.
READ, WRITE, FAULTED, BIOS, OFFENDER = "#2563eb", "#16a34a", "#dc2626", "#111827", "#db2777"
BAND = "#ebf3fe"  # the first step band: rgba(59, 130, 246, 0.10) over white


def report(*args, env=None):
    return subprocess.run([str(bt.blkrig()), "report", *map(str, args)], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "guestless"
    tool = bt.build_dir() / "harness" / "tests" / "guestless-run-folder"
    r = subprocess.run([str(tool), str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def page(run_dir):
    r = report(run_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(run_dir / "report.html")
    return run_dir / "report.html"


def plot_box(loaded):
    box = loaded.attr("data-plot-box")
    assert box, "the page did not report where its plot is"
    return tuple(int(v) for v in box.split(","))


def test_page_is_self_contained(page):
    html = page.read_text()
    # Nothing to fetch: no external scripts, styles, images or imports.
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=", html, re.I)
    assert "@import" not in html
    data = json.loads(re.search(r'<script type="application/json" id="blkrig-data">(.*?)</script>', html, re.S).group(1))
    marks = {m["name"]: m for m in data["marks"]}
    trace = bt.trace_records(page.parent / "trace.bin")
    requests = [r for r in trace if r["kind"] == "request"]
    assert sum(m["count"] for m in marks.values()) == len(requests)
    assert marks["read"]["count"] > 0 and marks["write"]["count"] > 0 and marks["faulted"]["count"] > 0
    assert len(data["steps"]) == 4 and all(s["t_begin"] is not None and s["t_end"] is not None for s in data["steps"])
    # The failed max_request_bytes expectation's first offender is the first write.
    (o,) = data["offenders"]
    first_write = min(r["seq"] for r in requests if r["op"] == "write")
    assert o["property"] == "max_request_bytes" and o["seq"] == first_write and o["s"] == 2048
    assert len(data["bios"]["t"]) > 0


def test_page_draws_without_console_messages(page):
    loaded = browser.load(page)
    assert loaded.console == [], "\n".join(loaded.console)
    assert loaded.attr("data-state") == "drawn", loaded.attr("data-error")
    assert int(loaded.attr("data-points-read")) > 0 and int(loaded.attr("data-points-faulted")) > 0
    assert loaded.attr("data-steps") == "4" and loaded.attr("data-offenders") == "1"
    # Drawn elements' text (the DOM also holds the page's script, so each is matched between tags).
    for text in ["Steps", "Expectations", "Findings", "max_request_bytes", "FAIL", "PASS", "Request size and latency", "failed: ret expected 0, got -1"]:
        assert f">{text}<" in loaded.dom, text


def test_screenshot_shows_each_mark(page, tmp_path):
    box = plot_box(browser.load(page))
    img = browser.screenshot(page, tmp_path / "report.png")
    assert (img.width, img.height) == browser.WINDOW
    counts = {name: img.count(color, box) for name, color in
              [("read", READ), ("write", WRITE), ("faulted", FAULTED), ("offender", OFFENDER), ("bios", BIOS)]}
    assert counts["read"] > 500, counts
    assert counts["write"] > 100, counts
    assert counts["faulted"] > 20, counts
    assert counts["offender"] > 20, counts
    assert counts["bios"] == 0, counts  # the overlay is off until asked for
    assert img.count_near(BAND, 2, box) > 10000, "no step band"
    shutil.copy(tmp_path / "report.png", bt.build_dir() / "report-guestless.png")  # for people to look at


def test_bios_overlay_when_asked(page, tmp_path):
    box = plot_box(browser.load(page))
    img = browser.screenshot(page, tmp_path / "bios.png", fragment="bios")
    assert img.count(BIOS, box) > 100


def test_not_a_run_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = report(empty)
    assert r.returncode == 2
    assert str(empty) in r.stderr and "trace.bin" in r.stderr
    assert list(empty.iterdir()) == []
    r = report(tmp_path / "missing")
    assert r.returncode == 2 and str(tmp_path / "missing") in r.stderr


def test_missing_plotting_library(run_dir, tmp_path):
    # A source tree with the page's own files but no npm ci.
    web = tmp_path / "src" / "harness" / "report" / "web"
    web.mkdir(parents=True)
    for f in ["report.js", "report.css"]:
        shutil.copy(bt.REPO / "harness" / "report" / "web" / f, web / f)
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("report.html", "disk.img"))
    before = sorted(p.name for p in folder.iterdir())
    r = report(folder, env={**os.environ, "BLKRIG_SOURCE_DIR": str(tmp_path / "src")})
    assert r.returncode == 3
    assert "uPlot.iife.min.js" in r.stderr and "npm ci" in r.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def test_index_over_several_runs(run_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns("report.html", "disk.img"))
    index = tmp_path / "index.html"
    r = report(a, b, "--out", index)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(a / "report.html"), str(b / "report.html"), str(index)]
    html = index.read_text()
    assert 'href="a/report.html"' in html and 'href="b/report.html"' in html
    assert html.count(">fail<") == 2
    loaded = browser.load(index)
    assert loaded.console == [], "\n".join(loaded.console)
    # A bad folder among good ones: nothing is written.
    c = tmp_path / "c"
    shutil.copytree(run_dir, c, ignore=shutil.ignore_patterns("report.html", "disk.img"))
    r = report(c, tmp_path / "nope", "--out", tmp_path / "index2.html")
    assert r.returncode == 2 and "nope" in r.stderr
    assert not (c / "report.html").exists() and not (tmp_path / "index2.html").exists()
