"""fs-mlx: a small, readable LLM inference engine on MLX.

    from fs_mlx import load, generate, stream_generate

    lm = load("smollm2")                          # a path, .gguf, repo id or alias; kernels="auto"
    text, tokens, stats = generate(lm, lm.tokenizer.encode("The capital of France is"), max_tokens=8)
    print(text)

The layout follows the data flow: formats/ (files in) -> model/ (config,
transformer, backends; kernels/ and msl/ beside it) -> loader.py -> generation/
-> apps/ (the fsx commands). docs/README.md is the map.
"""

# First, before anything imports mlx.core: bind MLX's BLAS calls to the system
# OpenBLAS when it is installed (an optional ~2x fp32 speed-up; see openblas.py).
from . import openblas  # noqa: F401  (isort: skip)

__version__ = "0.1.0"
__all__ = ["load", "generate", "stream_generate"]


def __getattr__(name: str):
    # Imported on first use, so `fsx --help` does not pay for MLX.
    if name == "load":
        from .loader import load

        return load
    if name in ("generate", "stream_generate"):
        from .generation import generate as module

        return getattr(module, name)
    raise AttributeError(f"module 'fs_mlx' has no attribute {name!r}")
