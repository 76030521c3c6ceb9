"""Worst |difference| from transformers per golden checkpoint, stage by stage.

    PYTHONPATH=. python tools/golden_deltas.py [--kernels mlx|reference|msl] [NAME ...]

Prints a markdown row per checkpoint: block 0, final norm, logits (max over
every prompt position) and whether the 32 greedy tokens equal transformers'.
The numbers in docs/forward-pass.md come from here.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from fs_mlx.generation.forward import logits_for
from fs_mlx.generation.generate import generate
from fs_mlx.loader import load

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--kernels", default="mlx")
    args = ap.parse_args()
    names = args.names or sorted(p.stem for p in (GOLDEN / "vectors").glob("*.npz"))
    print("| checkpoint | block 0 | final norm | logits | greedy |")
    for name in names:
        meta = json.loads((GOLDEN / "vectors" / f"{name}.json").read_text())
        a = np.load(GOLDEN / "vectors" / f"{name}.npz")
        lm = load(GOLDEN / "checkpoints" / name, kernels=args.kernels)
        worst = dict.fromkeys(("block0", "final_norm", "logits"), 0.0)
        greedy_equal = True
        for i in range(len(meta["prompts"])):
            ids, trace = a[f"p{i}_ids"].tolist(), {}
            logits = logits_for(lm, ids, trace)
            for k in ("block0", "final_norm"):
                worst[k] = max(worst[k], float(np.abs(trace[k] - a[f"p{i}_{k}"]).max()))
            worst["logits"] = max(worst["logits"], float(np.abs(logits - a[f"p{i}_logits"]).max()))
            _, got, _ = generate(lm, ids, max_tokens=32, ignore_eos=True)
            greedy_equal &= got == a[f"p{i}_greedy"].tolist()
        print(f"| {name} | {worst['block0']:.1e} | {worst['final_norm']:.1e} | {worst['logits']:.1e} "
              f"| {'equal' if greedy_equal else 'DIFFERENT'} |")


if __name__ == "__main__":
    main()
