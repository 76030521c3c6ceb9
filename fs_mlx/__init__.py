"""fs-mlx: a small, readable LLM inference engine on MLX."""

__version__ = "0.1.0"
