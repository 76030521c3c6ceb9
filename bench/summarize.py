"""Saved `fsx bench --out` reports -> one Markdown table (what docs/performance.md shows).

    python bench/summarize.py bench/results/linux-x86_64-2cpu/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def spread(row: dict, metric: str, scale: float = 1.0, digits: int = 2) -> str:
    s = row["spread"][metric]
    return f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f})"


def ratio(row: dict) -> str:
    if not row.get("ratio"):
        return ""
    r, p = row["ratio"], row["ratio_paired"]
    return (f"{r['generation_tps']:.2f}× (paired {p['generation_tps']:.2f}×) / "
            f"{r['peak_memory_gb']:.2f}×")


def main(paths: list[str]) -> None:
    print("| entry | engine | dtype | context | prompt tok/s | decode tok/s | peak MB | "
          "GB read/s | fsx ÷ this: decode / peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        rep = json.loads(Path(path).read_text())
        name = Path(path).stem
        for row in rep["results"]:
            print(f"| {name} | {row['engine']} | {row['dtype']} | {row['context']} | "
                  f"{spread(row, 'prompt_tps', digits=1)} | {spread(row, 'generation_tps')} | "
                  f"{row['peak_memory_gb'] * 1000:.0f} | {row['achieved_gbs']:.2f} | {ratio(row)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
