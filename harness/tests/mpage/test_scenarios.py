"""The suite's scenarios without a guest: each builder's dict survives the
plugin's TOML writer unchanged (Python's own TOML reader reads it back), and
every step a test names exists."""

import tomllib

import pytest

from blkrig_test.plugin import to_toml

import mpage_scenarios as sc

BUILDERS = {"read-nomerges": lambda: sc.read("nomerges"), "read-merging": lambda: sc.read("merging"),
            "frag512": sc.frag512, "sparse": sc.sparse, "read-eio": sc.read_eio, "write-eio": sc.write_eio,
            "write": sc.write, "ext2": sc.ext2, "ext2-fs-ext2-1k": lambda: sc.ext2("ext2", 1024),
            "ext2-fs-ext2-4k": lambda: sc.ext2("ext2", 4096), "segmax": sc.segmax, "delay": sc.delay}


@pytest.mark.parametrize("name", BUILDERS)
def test_scenario_round_trips_through_toml(name):
    s = BUILDERS[name]()
    assert tomllib.loads(to_toml(s.doc)) == s.doc
    assert len({BUILDERS[n]().name for n in BUILDERS}) == len(BUILDERS), "shared runs are keyed by scenario name"
    for label, index in s.steps.items():
        assert 0 <= index < len(s.doc["steps"]), f"{name}: step '{label}' -> {index}"
