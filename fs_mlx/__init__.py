"""fs-mlx: a small, readable LLM inference engine on MLX."""

# First, before anything imports mlx.core: bind MLX's BLAS calls to the system
# OpenBLAS when it is installed (an optional ~2x fp32 speed-up; see openblas.py).
from . import openblas  # noqa: F401  (isort: skip)

__version__ = "0.1.0"
