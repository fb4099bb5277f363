"""pytest plugin for tests that boot guest kernels with `blkrig run`.

Registered by harness/tests/conftest.py (`pytest_plugins`); elsewhere use
`-p blkrig_test.plugin` with harness/python on PYTHONPATH.

Option
  --blkrig-kernel NAME   a catalogue kernel or a kernel folder; repeatable.
                         Default: the catalogue's default kernel plus every
                         catalogue kernel that is fetched (`blkrig kernel list`).

Fixtures
  blkrig_kernel   the kernel a test runs on: tests that ask for it are
                  parametrised over the chosen kernels, ids = kernel names.
  blkrig_disk     factory: a blkrig-mkdisk spec (dict) -> Disk (image, extents).
  blkrig_run      factory: a scenario (dict, TOML text or a path) and a kernel
                  -> RunResult (the loaded `blkrig_model.Run`, the run folder,
                  exit code and output). `blkrig_run(..., share="key")` runs a
                  scenario once per kernel for the whole session, across
                  pytest-xdist workers too (a file lock in the session's
                  temporary folder), so rows that read the same run share it.

Every run folder a test used is listed in its failure report ("blkrig run
folders") and in the JUnit XML as the property `blkrig_run`. Each run gets its
own folder under the test's tmp_path (shared runs: under the session's base
temporary folder); `blkrig run` puts the vhost-user socket in a fresh
mkdtemp folder, so parallel runs (`pytest -n 2`) do not collide.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest

import blkrig_test as bt

_RUNS_KEY = pytest.StashKey[list]()      # on a test item: the run folders it used
_KERNELS_KEY = pytest.StashKey[list]()   # on the config: the kernel parameters


# ---------------------------------------------------------------- kernels

@dataclass(frozen=True)
class CatalogueKernel:
    name: str
    fetched: bool
    default: bool
    release: str  # "" when not fetched


def catalogue() -> list[CatalogueKernel]:
    """`blkrig kernel list --json`: name, fetched or not, the default."""
    r = subprocess.run([str(bt.blkrig()), "kernel", "list", "--json"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"blkrig kernel list failed ({r.returncode}): {r.stderr.strip()}")
    return [CatalogueKernel(k["name"], k["fetched"], k["default"], k["release"] or "") for k in json.loads(r.stdout)]


def _kernel_id(k: str) -> str:
    return Path(k).name if "/" in k else k


def _chosen_kernels(config) -> list[Any]:
    """The kernels to parametrise over, as pytest params (unusable ones skip)."""
    asked = config.getoption("blkrig_kernels") or []
    try:
        cat = {k.name: k for k in catalogue()}
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return [pytest.param(None, id="no-kernel", marks=pytest.mark.skip(reason=f"cannot list kernels: {e}"))]
    if not asked:
        default = [k.name for k in cat.values() if k.default]
        asked = default + [k.name for k in cat.values() if k.fetched and not k.default]
    params = []
    for name in dict.fromkeys(asked):
        if name in cat and not cat[name].fetched:
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(
                reason=f"kernel {name} is not fetched: run `blkrig kernel fetch {name}`")))
        elif name not in cat and not Path(name).exists():
            params.append(pytest.param(name, id=_kernel_id(name), marks=pytest.mark.skip(
                reason=f"--blkrig-kernel {name}: neither a catalogue kernel ({', '.join(cat)}) nor a path")))
        else:
            params.append(pytest.param(name, id=_kernel_id(name)))
    return params


# ---------------------------------------------------------------- TOML

def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def _is_table_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(doc: dict) -> str:
    """A scenario dict as TOML: dicts become [tables], lists of dicts [[arrays of
    tables]], dicts inside an array-of-tables element inline tables."""
    lines: list[str] = []

    def table(prefix: str, t: dict, in_array: bool) -> None:
        for k, v in t.items():
            if v is None:
                continue
            if (isinstance(v, dict) and not in_array) or _is_table_list(v):
                continue
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in t.items():
            name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
            if isinstance(v, dict) and not in_array:
                lines.extend(["", f"[{name}]"])
                table(name, v, False)
            elif _is_table_list(v):
                for item in v:
                    lines.extend(["", f"[[{name}]]"])
                    table(name, item, True)

    table("", doc, False)
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------- the model

def import_model():
    """blkrig_model from the build (BLKRIG_BUILD_DIR, else ./build): harness/python."""
    try:
        import blkrig_model  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(bt.build_dir() / "harness" / "python"))
    try:
        import blkrig_model
    except ImportError as e:
        pytest.fail(f"the run model's Python bindings (blkrig_model) are not in {bt.build_dir() / 'harness' / 'python'}: "
                    f"build them (pybind11-dev, python3-dev) or set BLKRIG_BUILD_DIR ({e})", pytrace=False)
    return blkrig_model


_loaded: dict[str, Any] = {}


def load_model(folder: Path):
    """blkrig_model.load_run, once per folder and process."""
    key = str(folder)
    if key not in _loaded:
        _loaded[key] = import_model().load_run(key)
    return _loaded[key]


# ---------------------------------------------------------------- runs

@dataclass
class RunResult:
    """One `blkrig run`: its folder, exit code, output, and the loaded model
    (`run`, a blkrig_model.Run; None if the rig failed before writing one).
    Unpacks as (run, dir)."""
    dir: Path
    kernel: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    _run: Any = field(default=None, repr=False)

    @property
    def run(self):
        if self._run is None:
            self._run = load_model(self.dir)
        return self._run

    def __iter__(self):
        return iter((self.run, self.dir))

    def describe(self) -> str:
        return f"blkrig run on {self.kernel} exited {self.returncode}, run folder {self.dir}"


@dataclass
class Disk:
    image: Path
    extents: dict
    spec: dict

    def file(self, path: str) -> dict:
        return next(f for f in self.extents["files"] if f["path"] == path)


def _note_folder(request, folder: Path) -> None:
    node = request.node
    runs = node.stash.setdefault(_RUNS_KEY, [])
    if str(folder) not in runs:
        runs.append(str(folder))
        node.user_properties.append(("blkrig_run", str(folder)))


def _scenario_text(scenario: Any) -> str:
    if isinstance(scenario, dict):
        return to_toml(scenario)
    if isinstance(scenario, Path):
        return scenario.read_text()
    if isinstance(scenario, str):
        return scenario
    raise TypeError(f"a scenario is a dict, TOML text or a Path, not {type(scenario).__name__}")


def _run_blkrig(text: str, kernel: str | None, out: Path, timeout: int | None, args: Iterable[str]) -> RunResult:
    out.parent.mkdir(parents=True, exist_ok=True)
    toml_path = out.parent / f"{out.name}.toml"
    toml_path.write_text(text)
    cmd = [str(bt.blkrig()), "run", str(toml_path), "--out", str(out)]
    if kernel:
        cmd += ["--kernel", kernel]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    cmd += list(args)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=(timeout or 600) + 120)
    return RunResult(out, kernel or "", r.returncode, r.stdout, r.stderr, time.monotonic() - t0)


def _check_exit(res: RunResult, expect_exit: int | Iterable[int] | None) -> None:
    if expect_exit is None:
        return
    ok = {expect_exit} if isinstance(expect_exit, int) else set(expect_exit)
    if res.returncode not in ok:
        pytest.fail(f"{res.describe()} (expected {sorted(ok)})\n--- stdout\n{res.stdout.strip()}\n--- stderr\n"
                    f"{res.stderr.strip()[-4000:]}", pytrace=False)


def _shared_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # Under pytest-xdist every worker has its own base (…/popen-gwN); the
    # parent is the session's, common to all workers.
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    d = root / "blkrig-shared"
    d.mkdir(exist_ok=True)
    return d


class RunFactory:
    """The blkrig_run fixture: `blkrig_run(scenario, kernel, ...)`."""

    def __init__(self, request, tmp_path: Path, tmp_path_factory):
        self._request = request
        self._tmp = tmp_path
        self._factory = tmp_path_factory
        self._n = 0

    def __call__(self, scenario: Any, kernel: str | None = None, *, name: str = "run", share: str | None = None,
                 expect_exit: int | Iterable[int] | None = 0, timeout: int | None = None,
                 args: Iterable[str] = ()) -> RunResult:
        """Run a scenario on a kernel (None: the scenario's, else blkrig's default).

        expect_exit: the exit codes that count as a run (default 0: every step
        expectation held); anything else fails the test with the run folder and
        the output. None accepts any. share: a key; the first test to ask runs
        the scenario, later ones (any worker) reuse its folder. A shared run
        whose scenario text changed under the same key is an error."""
        text = _scenario_text(scenario)
        if share is None:
            self._n += 1
            out = self._tmp / (f"{name}-{self._n}" if self._n > 1 else name)
            res = _run_blkrig(text, kernel, out, timeout, args)
        else:
            res = self._shared(text, kernel, share, timeout, args)
        _note_folder(self._request, res.dir)
        _check_exit(res, expect_exit)
        return res

    def _shared(self, text: str, kernel: str | None, key: str, timeout, args) -> RunResult:
        root = _shared_root(self._factory)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{key}-{_kernel_id(kernel or 'default')}")
        out = root / slug
        digest = hashlib.sha256((text + "\0" + " ".join(args)).encode()).hexdigest()
        stamp = root / f"{slug}.result.json"
        with open(root / f"{slug}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be running it right now
            if stamp.exists():
                saved = json.loads(stamp.read_text())
                if saved["digest"] != digest:
                    raise RuntimeError(f"shared run '{key}' asked for with two different scenarios")
                return RunResult(out, kernel or "", saved["returncode"], saved["stdout"], saved["stderr"], saved["seconds"])
            res = _run_blkrig(text, kernel, out, timeout, args)
            stamp.write_text(json.dumps({"digest": digest, "returncode": res.returncode, "stdout": res.stdout,
                                         "stderr": res.stderr, "seconds": res.seconds}))
            return res


# ---------------------------------------------------------------- pytest hooks and fixtures

def pytest_addoption(parser):
    g = parser.getgroup("blkrig", "blkrig guest runs")
    g.addoption("--blkrig-kernel", action="append", dest="blkrig_kernels", default=[], metavar="NAME",
                help="kernel to run on (catalogue name or folder); repeatable. Default: the default kernel "
                     "plus every fetched catalogue kernel (blkrig kernel list)")


def pytest_generate_tests(metafunc):
    if "blkrig_kernel" in metafunc.fixturenames:
        cache = metafunc.config.stash.get(_KERNELS_KEY, None)
        if cache is None:
            cache = _chosen_kernels(metafunc.config)
            metafunc.config.stash[_KERNELS_KEY] = cache
        metafunc.parametrize("blkrig_kernel", cache, indirect=True, scope="session")


@pytest.fixture(scope="session")
def blkrig_kernel(request):
    """The kernel under test (a catalogue name or a folder), one per parameter."""
    if not hasattr(request, "param"):
        pytest.fail("blkrig_kernel is parametrised by the blkrig plugin; it cannot be used here", pytrace=False)
    return request.param


@pytest.fixture
def blkrig_run(request, tmp_path, tmp_path_factory):
    """Factory: blkrig_run(scenario, kernel, share=None, expect_exit=0) -> RunResult."""
    return RunFactory(request, tmp_path, tmp_path_factory)


@pytest.fixture
def blkrig_disk(tmp_path):
    """Factory: blkrig_disk(spec, name="disk") -> Disk: the image blkrig-mkdisk
    built from a spec (guest-driver/image/README.md) and its extents report."""
    made = []

    def make(spec: dict, name: str = "disk") -> Disk:
        n = len(made)
        stem = name if n == 0 else f"{name}-{n}"
        spec_path = tmp_path / f"{stem}.json"
        spec_path.write_text(json.dumps(spec))
        image, extents = tmp_path / f"{stem}.img", tmp_path / f"{stem}-extents.json"
        mkdisk = bt.build_dir() / "guest-driver" / "image" / "blkrig-mkdisk"
        r = subprocess.run([str(mkdisk), str(spec_path), "--out", str(image), "--extents", str(extents)],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.fail(f"blkrig-mkdisk {spec_path} exited {r.returncode}: {r.stderr.strip()}", pytrace=False)
        d = Disk(image, json.loads(extents.read_text()), spec)
        made.append(d)
        return d

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    runs = item.stash.get(_RUNS_KEY, [])
    if runs and report.failed:
        report.sections.append(("blkrig run folders", "\n".join(runs)))
