"""Shared fixtures for the MSL executor's tests.

Every test runs on this machine (Linux, no Metal): the executor is the thing
under test. A missing compiler is a failure with the fix in the message, not
a skip — `pip install -e '.[dev]'` brings ziglang.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for kernels.py

ORDERS = ["forward", "reverse", "random"]


@pytest.fixture(scope="session", autouse=True)
def _compiler_present():
    from fs_mlx.msl import MslCompilerMissing
    from fs_mlx.msl.compiler import find_compiler

    try:
        find_compiler()
    except MslCompilerMissing as e:
        pytest.fail(str(e), pytrace=False)
