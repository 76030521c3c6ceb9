# fs_mlx first: it binds MLX to the system OpenBLAS (when installed) only if it is
# imported before mlx.core, so the tests run what `fsx` runs (fs_mlx/openblas.py).
import fs_mlx  # noqa: F401  (isort: skip)
import pytest

from checkpoints import write_checkpoint


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random Qwen3-style checkpoint (GQA, head_dim != hidden/heads, tied)."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen3")
