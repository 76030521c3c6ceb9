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

from fs_mlx.files import cache_dir as fsx_cache_dir
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
    d = fsx_cache_dir() / "msl"
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


def kernel_library(tu: str, label: str, metal_check: bool = False, instantiation: str = "") -> tuple[Path, bool]:
    """Compile a kernel translation unit; returns (path, was_cached).

    With `metal_check`, the kernel first passes `check_metal_rules` (once per
    source: a stamp file beside the cached library remembers it).
    """
    flags = COMMON_FLAGS + KERNEL_FLAGS
    key = hashlib.sha256((_runtime_digest() + find_compiler()[1] + " ".join(flags) + tu).encode()).hexdigest()[:32]
    out = cache_dir() / f"k-{key}.so"
    if metal_check:
        stamp = cache_dir() / f"k-{key}.checked"
        if not stamp.exists():
            check_metal_rules(tu, label, instantiation)
            stamp.touch()
    if out.exists():
        return out, True
    _compile_to(out, flags, tu, label, lambda err, src: format_compile_error(err, src, label))
    return out, False


# What the check pass turns into errors, beyond address spaces (metal_types.h
# and metal_math.h have the MSL_METAL_CHECK side of the runtime).
_NO_DOUBLE = "msl_error_Metal_has_no_double_type"
CHECK_FLAGS = [
    "-x", "c++", "-std=c++20", "-S", "-emit-llvm", "-O0", "-gline-tables-only", "-nostdinc++",
    "-fno-sanitize=all", "-Wno-everything",
    "-Werror=vla-cxx-extension",  # variable-length arrays: Metal has none
]
ENTRY_MARK = 'extern "C" __attribute__((visibility("default"))) void msl_entry'


def check_metal_rules(tu: str, label: str, instantiation: str = "") -> None:
    """A pass with Metal's rules that flat C++ would not enforce.

    Address spaces: device/constant/threadgroup become distinct clang address
    spaces, so a `const device T*` into an input MLX passes as `constant`
    (fewer than 8 elements), a device pointer assigned to a plain (thread)
    one, a write through `constant` or a thread reference bound to device
    memory fail as they do in Metal's compiler. The kernel is *instantiated*
    exactly as MLX instantiates it (`template [[host_name]] ... decltype(k<...>)
    k<...>;`): a template is only checked for the arguments it is used with.
    Also errors: `double`, variable-length arrays, min/max/clamp of two
    different scalar types (e.g. size_t and int; Metal's overloads are
    ambiguous there), recursion and function pointers (from the LLVM IR of
    the kernel's own functions).
    """
    head, _, rest = tu.partition("\n")  # the #include of metal_runtime.h
    body = rest[: rest.rfind(ENTRY_MARK)]
    src = ("#define MSL_ADDRESS_SPACES 1\n#define MSL_METAL_CHECK 1\n" + head + "\n"
           + f"#define double {_NO_DOUBLE}\n" + body)
    if "<" in instantiation:
        # MLX: template [[host_name("k")]] [[kernel]] decltype(k<...>) k<...>;
        src += f"\n#line 1 \"generated\"\ntemplate decltype({instantiation}) {instantiation};\n"
    fd, tmp_src = tempfile.mkstemp(suffix=".cpp", dir=cache_dir())
    with os.fdopen(fd, "w") as f:
        f.write(src)
    tmp_ll = tmp_src[:-4] + ".ll"
    try:
        # (zig's driver needs an output file, so -S rather than -fsyntax-only)
        proc = _run_compiler(CHECK_FLAGS + ["-I", str(PKG_DIR), tmp_src, "-o", tmp_ll], label)
        if proc.returncode != 0:
            err = proc.stderr.replace(f"unknown type name '{_NO_DOUBLE}'", "`double`: Metal has no double type")
            raise MslCompileError(
                "Metal check failed (Metal's compiler would reject this):\n" + format_compile_error(err, src, label)
            )
        problem = ir_problems(Path(tmp_ll).read_text())
        if problem:
            raise MslCompileError(f"Metal check failed (Metal's compiler would reject this): kernel `{label}`: {problem}")
    finally:
        for f in (tmp_src, tmp_ll):
            if os.path.exists(f):
                os.unlink(f)


# Keep the old name: the address-space rules are the heart of the check.
check_address_space_rules = check_metal_rules

_IR_DEFINE = re.compile(r"^define [^@]*@(\S+?)\(.*!dbg !(\d+)", re.M)
_IR_SUBPROGRAM = re.compile(r"^!(\d+) = distinct !DISubprogram\((?:name: \"([^\"]*)\", )?.*?file: !(\d+)", re.M)
_IR_FILE = re.compile(r'^!(\d+) = !DIFile\(filename: "([^"]*)"', re.M)
_KERNEL_FILES = ("header", "body", "signature", "generated")


def ir_problems(ir: str) -> str | None:
    """Recursion or function pointers among the kernel's own functions.

    Metal has neither (outside function tables): a call graph cycle or an
    indirect call in a function the kernel's header or body defines is an
    error. Runtime functions (metal_runtime.h: the executor's own machinery,
    which calls through the runtime's function table) are not looked at.
    """
    files = {m.group(1): m.group(2) for m in _IR_FILE.finditer(ir)}
    sub_file = {m.group(1): files.get(m.group(3), "") for m in _IR_SUBPROGRAM.finditer(ir)}
    sub_name = {m.group(1): m.group(2) or "?" for m in _IR_SUBPROGRAM.finditer(ir)}
    funcs: dict[str, tuple[str, str]] = {}  # mangled -> (readable name, body text)
    for m in _IR_DEFINE.finditer(ir):
        if sub_file.get(m.group(2)) not in _KERNEL_FILES:
            continue
        end = ir.find("\n}\n", m.end())
        funcs[m.group(1)] = (sub_name.get(m.group(2), m.group(1)), ir[m.end() : end])
    calls: dict[str, set[str]] = {}
    for name, (readable, text) in funcs.items():
        if re.search(r"\b(?:call|invoke)\b[^@%\n]*%[\w.]+\(", text):
            return f"`{readable}` calls through a function pointer (Metal has no function pointers)"
        callees = set(re.findall(r"\b(?:call|invoke)\b[^@\n]*@([\w.$]+)\(", text))
        for m in re.finditer(r"@([\w.$]+)", text):
            if m.group(1) in funcs and m.group(1) not in callees:
                return f"`{readable}` takes the address of `{funcs[m.group(1)][0]}` (Metal has no function pointers)"
        calls[name] = callees & funcs.keys()
    # A cycle in the call graph (depth-first search with colours)
    state: dict[str, int] = {}

    def visit(f: str) -> str | None:
        state[f] = 1
        for g in calls.get(f, ()):
            if state.get(g) == 1:
                return g
            if g not in state:
                r = visit(g)
                if r:
                    return r
        state[f] = 2
        return None

    for f in funcs:
        if f not in state:
            g = visit(f)
            if g:
                return f"`{funcs[g][0]}` is recursive (Metal does not allow recursion)"
    return None


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
