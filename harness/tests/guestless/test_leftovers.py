"""ci/leftovers, the check ci/test runs around the whole suite: a process the
command left running and a blkrig-* folder it left in the temporary
directory are each a failed test case (and are stopped and removed); a clean
command passes both; the command's own exit status is kept."""

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import blkrig_test as bt

LEFTOVERS = bt.REPO / "ci" / "leftovers"


def cases(junit: Path) -> dict:
    root = ET.parse(junit).getroot()
    return {c.get("name"): c.find("failure") for c in root.iter("testcase")}


def test_a_clean_command_passes_both_cases(tmp_path):
    junit = tmp_path / "after.xml"
    r = subprocess.run([str(LEFTOVERS), "--junit", str(junit), "--tmp", str(tmp_path), "--", "sh", "-c", "exit 3"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    c = cases(junit)
    assert len(c) == 2 and all(f is None for f in c.values()), c


def test_a_process_and_a_folder_left_behind_fail_and_are_cleaned_up(tmp_path):
    junit = tmp_path / "after.xml"
    marker = f"leftover-{os.getpid()}"
    # A daemonised sleeper (its parent exits at once) and a socket folder whose owner is gone.
    script = (f"setsid bash -c 'exec -a {marker} sleep 300' </dev/null >/dev/null 2>&1 & "
              f"mkdir {tmp_path}/blkrig-abcdef && echo 999999999 > {tmp_path}/blkrig-abcdef/owner; "
              f"mkdir {tmp_path}/blkrig-livexx && echo $PPID > {tmp_path}/blkrig-livexx/owner; sleep 0.3")
    r = subprocess.run([str(LEFTOVERS), "--junit", str(junit), "--tmp", str(tmp_path), "--grace", "1", "--", "sh", "-c", script], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    c = cases(junit)
    procs = c["no process the suite started is still running"]
    folders = c[f"no blkrig-* folder left in {tmp_path}"]
    assert procs is not None and marker in procs.text, procs
    assert folders is not None and "blkrig-abcdef" in folders.text, folders
    # The folder of a live owner (ci/leftovers itself here) is not the command's leftover.
    assert "blkrig-livexx" not in folders.text
    assert not (tmp_path / "blkrig-abcdef").exists()
    assert bt.processes_mentioning(marker) == []
