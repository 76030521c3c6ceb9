"""Find clang, compile kernels to shared objects, cache them by source hash.

The compiler is, in order: $FSX_MSL_CC (a clang executable), the `ziglang`
package from PyPI (clang 22, `python -m ziglang cc`), or clang-16 and newer
on PATH. Debian's default clang 14 lacks `_Float16` arithmetic and GCC lacks
`ext_vector_type` swizzles, so neither will do.

We compile with `-nostdinc++`: the runtime headers use no C++ library
(ziglang would otherwise build libc++ first, ~47 s), and half/bfloat
arithmetic is rounded after every operation like on the GPU
(`-ffloat16-excess-precision=none`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fs_mlx.msl.errors import MslCompileError, MslCompilerMissing

PKG_DIR = Path(__file__).resolve().parent
RUNTIME_FILES = ("msl_abi.h", "metal_types.h", "metal_math.h", "metal_sync.h", "metal_runtime.h", "fiber_runtime.cpp")

COMMON_FLAGS = [
    "-x", "c++", "-std=c++20", "-O2", "-fPIC", "-shared", "-nostdinc++",
    "-fno-exceptions", "-fno-rtti", "-fno-sanitize=all", "-fvisibility=hidden", "-g0",
]
KERNEL_FLAGS = [
    "-w",  # warnings about the generated signature ([[buffer(0)]]...) are noise
    "-Xclang", "-ffloat16-excess-precision=none",
    "-Xclang", "-fbfloat16-excess-precision=none",
    "-lm",
]


def cache_dir() -> Path:
    root = os.environ.get("FSX_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "fs-mlx"
    d = base / "msl"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: keep going with a temporary cache
        d = Path(tempfile.gettempdir()) / "fs-mlx-msl"
        d.mkdir(parents=True, exist_ok=True)
    return d


def _clang_major(cmd: list[str]) -> int | None:
    try:
        out = subprocess.run(cmd + ["--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"clang version (\d+)", out)
    return int(m.group(1)) if m else None


@functools.lru_cache(maxsize=1)
def find_compiler() -> tuple[list[str], str]:
    """(command, version line) of the first usable clang."""
    candidates: list[list[str]] = []
    if os.environ.get("FSX_MSL_CC"):
        candidates.append([os.environ["FSX_MSL_CC"]])
    try:
        import ziglang

        # The zig binary itself: `python -m ziglang` would add an interpreter start.
        zig = Path(ziglang.__file__).parent / ("zig.exe" if sys.platform == "win32" else "zig")
        candidates.append([str(zig), "cc"] if zig.exists() else [sys.executable, "-m", "ziglang", "cc"])
    except ImportError:
        pass
    for v in range(22, 15, -1):
        exe = shutil.which(f"clang-{v}")
        if exe:
            candidates.append([exe])
    if shutil.which("clang"):
        candidates.append([shutil.which("clang")])
    for cmd in candidates:
        major = _clang_major(cmd)
        if major is not None and major >= 16:
            return cmd, f"clang {major} ({' '.join(cmd)})"
    raise MslCompilerMissing(
        "the MSL executor needs clang 16 or newer (for _Float16 and ext_vector_type): "
        "`pip install ziglang` (it is in the project's `dev` and `msl` extras: "
        "`pip install -e '.[dev]'`), or install clang-16+ and put it on PATH, "
        "or point FSX_MSL_CC at a clang executable"
    )


def _runtime_digest() -> str:
    h = hashlib.sha256()
    for name in RUNTIME_FILES:
        h.update((PKG_DIR / name).read_bytes())
    return h.hexdigest()


def _run_compiler(args: list[str], what: str) -> subprocess.CompletedProcess:
    cmd, _ = find_compiler()
    return subprocess.run(cmd + args, capture_output=True, text=True, cwd=str(PKG_DIR))


def _compile_to(out: Path, args: list[str], source: str, what: str, format_error) -> None:
    """Compile `source` to `out` atomically (a half-written .so is never seen)."""
    fd, tmp_src = tempfile.mkstemp(suffix=".cpp", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        f.write(source)
    tmp_out = str(out) + f".tmp{os.getpid()}"
    try:
        proc = _run_compiler(args + ["-I", str(PKG_DIR), tmp_src, "-o", tmp_out], what)
        if proc.returncode != 0:
            raise MslCompileError(format_error(proc.stderr, source))
        os.replace(tmp_out, out)
    finally:
        os.unlink(tmp_src)
        if os.path.exists(tmp_out):
            os.unlink(tmp_out)


def _fiber_flags() -> list[str]:
    return ["-DMSL_FIBER_UCONTEXT=1"] if os.environ.get("FSX_MSL_FIBER") == "ucontext" else []


def runtime_library() -> Path:
    """The fiber runtime's shared object, compiled once per runtime source."""
    flags = COMMON_FLAGS + _fiber_flags() + ["-lpthread"]
    key = hashlib.sha256((_runtime_digest() + find_compiler()[1] + " ".join(flags)).encode()).hexdigest()[:24]
    out = cache_dir() / f"runtime-{key}.so"
    if not out.exists():
        src = (PKG_DIR / "fiber_runtime.cpp").read_text()
        _compile_to(out, flags, src, "runtime", lambda err, _: f"the MSL runtime failed to compile:\n{err}")
    return out


def kernel_library(tu: str, label: str, check_address_spaces: bool = False) -> tuple[Path, bool]:
    """Compile a kernel translation unit; returns (path, was_cached)."""
    flags = COMMON_FLAGS + KERNEL_FLAGS
    key = hashlib.sha256((_runtime_digest() + find_compiler()[1] + " ".join(flags) + tu).encode()).hexdigest()[:32]
    out = cache_dir() / f"k-{key}.so"
    if out.exists():
        return out, True
    if check_address_spaces:
        check_address_space_rules(tu, label)
    _compile_to(out, flags, tu, label, lambda err, src: format_compile_error(err, src, label))
    return out, False


def check_address_space_rules(tu: str, label: str) -> None:
    """A syntax-only pass with device/constant/threadgroup as clang address spaces.

    Catches what Metal's compiler rejects and flat memory would let through:
    a `device` pointer assigned to a plain (thread) pointer, a write through
    `constant`, a threadgroup pointer passed where device is expected.
    """
    tu = "#define MSL_ADDRESS_SPACES 1\n" + tu
    # The entry point casts raw buffers; only the kernel itself is checked.
    tu = tu[: tu.rfind('extern "C" __attribute__((visibility("default"))) void msl_entry')]
    fd, tmp_src = tempfile.mkstemp(suffix=".cpp", dir=cache_dir())
    with os.fdopen(fd, "w") as f:
        f.write(tu)
    tmp_obj = tmp_src[:-4] + ".o"
    try:
        # (zig's driver needs an output file, so -c -O0 rather than -fsyntax-only)
        args = ["-x", "c++", "-std=c++20", "-c", "-O0", "-nostdinc++", "-w", "-fno-sanitize=all",
                "-I", str(PKG_DIR), tmp_src, "-o", tmp_obj]
        proc = _run_compiler(args, label)
        if proc.returncode != 0:
            raise MslCompileError(
                "address-space check failed (Metal's compiler would reject this):\n"
                + format_compile_error(proc.stderr, tu, label)
            )
    finally:
        os.unlink(tmp_src)
        if os.path.exists(tmp_obj):
            os.unlink(tmp_obj)


_DIAG = re.compile(r"^(?:.*?[/\\])?(header|body|signature|generated|\w+\.h):(\d+):(\d+): (error|note|warning): (.*)$")


def format_compile_error(stderr: str, tu: str, label: str) -> str:
    """clang's errors, with file:line rewritten to the kernel's own parts.

    The offending line of the body or header is shown under each error.
    """
    parts = _split_parts(tu)
    lines = [f"kernel `{label}` failed to compile:"]
    shown = 0
    for raw in stderr.splitlines():
        m = _DIAG.match(raw)
        if not m:
            continue
        part, line, col, level, msg = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4), m.group(5)
        if level == "note" and part.endswith(".h"):
            continue
        where = {"body": "kernel body", "header": "kernel header", "signature": "generated signature"}.get(part, part)
        lines.append(f"  {where} line {line}, col {col}: {level}: {msg}")
        text = parts.get(part, [])
        if 0 < line <= len(text):
            lines.append(f"      {line:4d} | {text[line - 1]}")
        shown += 1
        if shown >= 12:
            break
    if shown == 0:
        lines.append(stderr.strip())
    return "\n".join(lines)


def _split_parts(tu: str) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {}
    current = None
    for line in tu.split("\n"):
        m = re.match(r'#line 1 "(\w+)"$', line)
        if m:
            current = m.group(1)
            parts[current] = []
        elif current is not None:
            parts[current].append(line)
    return parts
