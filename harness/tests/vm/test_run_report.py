"""The report.html `blkrig run` leaves in its run folder, for a real guest
run (scenarios/read-contiguous.toml), opened in headless Chromium: it draws
without a console message and its screenshot shows the reads and the steps'
bands."""

import json
import shutil
import subprocess

import pytest

import blkrig_test as bt
from blkrig_test import browser

READ = "#2563eb"
BAND = "#ebf3fe"  # the first step band: rgba(59, 130, 246, 0.10) over white


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    if not bt.have_kernel():
        pytest.skip("default kernel not fetched: run ci/setup")
    if not browser.available():
        pytest.skip(f"{browser.BROWSER} not installed: run ci/setup")
    out = tmp_path_factory.mktemp("report") / "contiguous"
    r = subprocess.run([str(bt.blkrig()), "run", str(bt.REPO / "scenarios" / "read-contiguous.toml"), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "no report.html" not in r.stdout
    return out


def test_run_writes_a_report_that_draws(run_dir, tmp_path):
    page = run_dir / "report.html"
    assert page.exists(), "blkrig run left no report.html"
    loaded = browser.load(page)
    assert loaded.console == [], "\n".join(loaded.console)
    assert loaded.attr("data-state") == "drawn", loaded.attr("data-error")
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert loaded.attr("data-steps") == str(len(verdict["steps"]))
    assert int(loaded.attr("data-points-read")) > 0
    # The expectations table (cells, not the page's script): every one held.
    assert ">covers_file<" in loaded.dom and ">PASS<" in loaded.dom and ">FAIL<" not in loaded.dom
    box = tuple(int(v) for v in loaded.attr("data-plot-box").split(","))
    img = browser.screenshot(page, tmp_path / "report.png")
    assert img.count(READ, box) > 300, "the reads are not drawn"
    assert img.count_near(BAND, 2, box) > 5000, "no step band"
    shutil.copy(tmp_path / "report.png", bt.build_dir() / "report-read-contiguous.png")  # for people to look at


def test_report_of_the_run_again(run_dir, tmp_path):
    # `blkrig report` on the run folder writes the same page elsewhere.
    out = tmp_path / "again.html"
    r = subprocess.run([str(bt.blkrig()), "report", str(run_dir), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.read_text().count("blkrig report: read-contiguous") >= 1
