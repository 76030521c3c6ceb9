"""The fuzzers of tests/fuzzing.py, a bounded run in CI (bench/fuzz.py runs them for hours).

Each target runs in a subprocess under an address-space limit (a reader that
tries to allocate gigabytes dies there, not in the test runner), each case under
a time limit (a hang is a failure), the same cases every run (--derandomize).
A failure prints hypothesis' smallest failing input: make it a regression row in
test_hostile.py or test_template_limits.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = {"safetensors": 150, "gguf": 120, "config": 150, "template": 80}  # ~40 s in all on 2 cores


@pytest.fixture(scope="module")
def fuzz_run():
    results = {}
    for target, cases in CASES.items():
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz.py"), "--target", target,
                            "--cases", str(cases), "--derandomize", "--memory-gb", "4"],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        results[target] = (r.returncode, json.loads(lines[-1]) if lines else None, r.stdout + r.stderr)
    return results


@pytest.mark.parametrize("target", list(CASES))
def test_fuzzer_finds_nothing(fuzz_run, target):
    rc, summary, output = fuzz_run[target]
    assert rc == 0, output[-4000:]
    assert summary["cases"] == CASES[target]
    # Both outcomes occur: the mutations reach past the first check, and the checks bite.
    assert summary.get("refused", 0) > 0 and summary.get("accepted", 0) > 0, summary
    print(summary)
