import sys
from pathlib import Path

# The shared test helpers live in harness/python.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

# Fixtures for tests that boot guest kernels: blkrig_kernel, blkrig_run, blkrig_disk.
pytest_plugins = ["blkrig_test.plugin"]
