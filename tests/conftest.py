import pytest

from checkpoints import write_checkpoint


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random Qwen3-style checkpoint (GQA, head_dim != hidden/heads, tied)."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen3")
