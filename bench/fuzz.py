"""Fuzz fs-mlx's readers for as long as you like (docs/trust.md).

    python bench/fuzz.py                              # every target, 500 cases each
    python bench/fuzz.py --target gguf --seconds 3600 # an hour of GGUF files
    python bench/fuzz.py --cases 200 --derandomize    # what CI runs (tests/test_fuzz.py)

Targets: safetensors, gguf, config, template (strategies and properties in
tests/fuzzing.py). Each case runs under a time limit (a hang is a failure) and
the whole process under an address-space limit (--memory-gb, Linux). A failure
prints hypothesis' smallest failing input and exits 1: make it a regression test.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import fs_mlx  # noqa: E402,F401  (isort: skip; before mlx, as the tests do)
from hypothesis import HealthCheck, given, settings  # noqa: E402

import fuzzing  # noqa: E402
from hostile import time_limit  # noqa: E402

TARGETS = ("safetensors", "gguf", "config", "template")


def target(name: str, workdir: Path):
    """(strategy, check) for one target, its good input built here."""
    if name == "safetensors":
        return fuzzing.safetensors_mutations(fuzzing.small_safetensors()), fuzzing.check_safetensors
    if name == "gguf":
        from checkpoints import random_model
        from gguf_files import write_gguf

        path = write_gguf(workdir / "small.gguf", random_model(), permute=False)
        return fuzzing.gguf_mutations(path.read_bytes()), fuzzing.check_gguf
    if name == "config":
        from mlx.utils import tree_flatten

        from checkpoints import BASE
        from fs_mlx.model.config import ModelConfig
        from fs_mlx.model.transformer import Transformer

        config = {**BASE, "eos_token_id": 2}
        skeleton = Transformer(ModelConfig.from_dict(config), ops=None)
        shapes = {k: tuple(v.shape) for k, v in tree_flatten(skeleton.parameters())}
        return fuzzing.config_mutations(config), lambda c: fuzzing.check_config(c, shapes)
    if name == "template":
        return fuzzing.TEMPLATES, fuzzing.check_template
    raise SystemExit(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")


def run(name: str, cases: int, derandomize: bool, case_seconds: int, workdir: Path) -> dict:
    strategy, check = target(name, workdir)
    outcomes: Counter = Counter()

    @settings(max_examples=cases, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(strategy)
    def case(value):
        with time_limit(case_seconds):
            outcomes[check(value)] += 1

    t = time.perf_counter()
    case()
    return {"target": name, "cases": sum(outcomes.values()), "seconds": round(time.perf_counter() - t, 1),
            **dict(outcomes)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=TARGETS, action="append", help="repeatable; default: all")
    p.add_argument("--cases", type=int, default=500, help="cases per round and target")
    p.add_argument("--seconds", type=float, default=0, help="keep running rounds until this much time passed")
    p.add_argument("--derandomize", action="store_true", help="the same cases every run (CI)")
    p.add_argument("--case-seconds", type=int, default=10, help="a case running longer is a hang")
    p.add_argument("--memory-gb", type=float, default=4, help="address-space limit (0: none)")
    a = p.parse_args(argv)
    if a.memory_gb:
        limit = int(a.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import tempfile

    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        while True:
            for name in a.target or TARGETS:
                print(json.dumps(run(name, a.cases, a.derandomize, a.case_seconds, Path(tmp))), flush=True)
            if time.monotonic() - start >= a.seconds:
                return 0


if __name__ == "__main__":
    sys.exit(main())
