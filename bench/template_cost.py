"""What the template limits cost per reply (docs/trust.md): Jinja's immutable sandbox as
transformers sets it up vs fs-mlx's bounded one, on golden/'s Qwen3 template.

    python bench/template_cost.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from fs_mlx.generation import chat  # noqa: E402
from fs_mlx.generation.sandbox import render_bounded  # noqa: E402


def median_ms(f, n: int = 30) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    source = json.loads((ROOT / "golden/checkpoints/qwen3-tiny/tokenizer_config.json").read_text())["chat_template"]
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                          extensions=["jinja2.ext.loopcontrols"])
    plain.filters["tojson"] = chat._tojson
    unbounded, bounded = plain.from_string(source), chat._compile(source)
    print("| conversation | Jinja's sandbox | bounded | added |\n| --- | --- | --- | --- |")
    for turns in (2, 20, 100):
        messages = []
        for i in range(turns):
            messages += [{"role": "user", "content": f"question {i} " * 20},
                         {"role": "assistant", "content": f"answer {i} " * 40}]
        args = dict(messages=messages, add_generation_prompt=True)
        assert unbounded.render(**args) == render_bounded(bounded, **args)
        a = median_ms(lambda: unbounded.render(**args))
        b = median_ms(lambda: render_bounded(bounded, **args))
        print(f"| {2 * turns} messages | {a:.2f} ms | {b:.2f} ms | +{b - a:.2f} ms |")


if __name__ == "__main__":
    main()
