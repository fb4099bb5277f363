"""Fault rules from a file, no guest: the rules a live device saves
(`blkrig fault ... save`) load into a fresh device (`--faults FILE`) as the
same canonical rules, and a wrong line in such a file is an error naming the
file, line and column, exit 2, from blkrig-device and from `blkrig run`
before it builds or boots anything."""

import os
import signal
import subprocess
import time

import pytest

import blkrig_test as bt

SCEN = bt.REPO / "scenarios"

# Spelled loosely on purpose: what is saved is each rule's canonical text.
RULES = [
    "ioerr  op=write,read sector=100..200 nth=2",
    "delay=5ms..9ms op=read prob=0.25 seed=11",
    "unsupp op=flush first=3",
    "torn=8:ok op=write queue=0 after_marker=3 until_marker=7",
    "corrupt=100:0x5a op=read sector=2048.. every=4",
]


class ControlledDevice:
    def __init__(self, tmp_path, name, *args):
        self.sock = str(tmp_path / f"{name}.vu")
        self.ctl = f"/tmp/blkrig-ff-{os.getpid()}-{name}.sock"  # socket paths are short-limited
        self.log = open(tmp_path / f"{name}.log", "w+")
        self.proc = subprocess.Popen([str(bt.device()), "--socket-path", self.sock, "--ram", "16M", "--control", self.ctl, *args],
                                     stderr=self.log)
        deadline = time.monotonic() + 10
        while not (os.path.exists(self.sock) and os.path.exists(self.ctl)):
            assert self.proc.poll() is None, f"blkrig-device exited at start: {self.log_text()}"
            assert time.monotonic() < deadline, "blkrig-device never listened"
            time.sleep(0.01)

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def fault(self, *args):
        r = subprocess.run([str(bt.blkrig()), "fault", "--control", self.ctl, *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"blkrig fault {' '.join(args)}: {r.stdout}{r.stderr}"
        return r.stdout

    def rules(self):
        """(id, rule text) per line of `blkrig fault list`."""
        out = []
        for line in self.fault("list").splitlines()[1:]:
            f = line.split(None, 3)
            out.append((int(f[0]), f[3]))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture
def devices():
    started = []
    yield started
    for d in started:
        d.stop()


def test_saved_rules_replay_into_a_fresh_device(tmp_path, devices):
    args = [a for r in RULES[:-1] for a in ("--fault", r)]
    a = ControlledDevice(tmp_path, "a", *args)
    devices.append(a)
    a.fault("add", RULES[-1])  # one added live: saved like the others
    want = a.rules()
    assert [i for i, _ in want] == [1, 2, 3, 4, 5]
    assert want[0][1] == "ioerr op=read,write sector=100..200 nth=2", "the rule is not listed in its canonical form"
    saved = tmp_path / "rules.jsonl"
    a.fault("save", str(saved))
    assert len(saved.read_text().splitlines()) == len(RULES)

    b = ControlledDevice(tmp_path, "b", "--faults", str(saved))
    devices.append(b)
    assert b.rules() == want, "the replayed device does not hold the saved rules"
    again = tmp_path / "again.jsonl"
    b.fault("save", str(again))
    assert again.read_text() == saved.read_text(), "saving the replayed rules does not give the same file"

    # Plain rule lines (with comments) and saved calls mix in one file.
    mixed = tmp_path / "mixed.rules"
    mixed.write_text("# plain\n" + RULES[0] + "   # a comment\n\n" + saved.read_text().splitlines()[1] + "\n")
    c = ControlledDevice(tmp_path, "c", "--faults", str(mixed))
    devices.append(c)
    assert c.rules() == want[:2]


@pytest.mark.parametrize("bad_line,column", [
    ("ioerr op=reed", 10),
    ('{"jsonrpc":"2.0","method":"fault.add","params":{"rule":"ioerr op=reed"}}', 66),
])
def test_a_bad_line_in_a_rules_file_names_file_line_and_column(tmp_path, bad_line, column):
    rules = tmp_path / "bad.rules"
    rules.write_text("# line 1\nunsupp op=flush\n" + bad_line + "\n")
    sock = tmp_path / "vu.sock"
    r = subprocess.run([str(bt.device()), "--socket-path", str(sock), "--ram", "1M", "--faults", str(rules)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert f"{rules}:3:{column}: expected an op" in r.stderr, r.stderr
    assert not sock.exists(), "the device listened despite the bad rule"

    # blkrig run checks it before the run folder, the disk or a boot.
    out = tmp_path / "run"
    r = subprocess.run([str(bt.blkrig()), "run", str(SCEN / "read-contiguous.toml"), "--out", str(out), "--faults", str(rules)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{rules}:3:{column}: expected an op" in r.stderr, r.stderr
    assert not out.exists(), "blkrig run started the run despite the bad rule"


def test_an_unreadable_rules_file_is_exit_2(tmp_path):
    missing = tmp_path / "none.rules"
    r = subprocess.run([str(bt.blkrig()), "run", str(SCEN / "read-contiguous.toml"), "--out", str(tmp_path / "run"), "--faults",
                        str(missing)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"--faults {missing}: cannot read it" in r.stderr, r.stderr
