"""`metal_kernel`: mx.fast.metal_kernel's API, run by the fiber runtime.

A call does what MLX's does — validate, generate the signature, compile (here:
clang, cached), bind buffers in [[buffer(i)]] order, dispatch `grid` threads in
groups of `threadgroup` — and then the host side of a GPU: copy inputs into
guarded memory, poison the outputs, run, copy the outputs back into arrays.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import re
import threading
from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from fs_mlx.msl import compiler, signature, translate
from fs_mlx.msl.errors import MslError, MslRuntimeError, MslUnsupportedError

# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    """How kernels run. Change with `settings(...)` or FSX_MSL_* variables."""

    order: str = "forward"  # forward | reverse | random: resume order of threads and threadgroups
    seed: int = 0  # for order="random"
    strict: bool = False  # report divergent threadgroup barriers
    watchdog_s: float = 20.0  # a launch running longer is stopped (spin-waits hang fibers)
    # The Metal check: an extra clang pass per new kernel source with Metal's
    # address spaces and rules (compiler.check_metal_rules). On by default:
    # a kernel Metal's compiler would reject should not run here either.
    address_space_check: bool = True
    stack_kb: int = 64  # stack of each Metal thread


def _env_settings() -> Settings:
    e = os.environ
    return Settings(
        order=e.get("FSX_MSL_ORDER", "forward"),
        seed=int(e.get("FSX_MSL_SEED", "0")),
        strict=e.get("FSX_MSL_STRICT", "0") not in ("", "0", "false"),
        watchdog_s=float(e.get("FSX_MSL_WATCHDOG", "20")),
        address_space_check=e.get("FSX_MSL_ASCHECK", "1") not in ("", "0", "false"),
        stack_kb=int(e.get("FSX_MSL_STACK_KB", "64")),
    )


_settings = _env_settings()
_ORDERS = {"forward": 0, "reverse": 1, "random": 2}


def get_settings() -> Settings:
    return _settings


@contextlib.contextmanager
def settings(**changes):
    """Temporarily change how kernels run: `with settings(order="random", seed=3): ...`."""
    global _settings
    old = _settings
    new = replace(old, **changes)
    if new.order not in _ORDERS:
        raise MslError(f"unknown thread order {new.order!r}; use forward, reverse or random")
    _settings = new
    try:
        yield new
    finally:
        _settings = old


# ------------------------------------------------------------ guarded memory
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = mmap.PAGESIZE
PROT_NONE = 0
_MAP_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS


def _map(size: int) -> int:
    p = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, _MAP_FLAGS, -1, 0)
    if p in (None, ctypes.c_void_p(-1).value):
        raise MemoryError(f"mmap of {size} bytes failed")
    return p


class GuardedBuffer:
    """`nbytes` of memory that ends right before an inaccessible page.

    A read or write past the end faults, and the runtime reports it as an
    out-of-bounds access instead of silently reading a neighbour (as a GPU
    would) or corrupting Python's heap.
    """

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        span = max(16, (nbytes + 15) & ~15)
        data_pages = (span + PAGE - 1) // PAGE
        self.size = (data_pages + 1) * PAGE
        self.base = _map(self.size)
        _libc.mprotect(self.base + data_pages * PAGE, PAGE, PROT_NONE)
        self.addr = self.base + data_pages * PAGE - span

    def view(self) -> np.ndarray:
        return np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.addr))

    def free(self):
        if self.base:
            _libc.munmap(self.base, self.size)
            self.base = 0


class _StackPool:
    """Fiber stacks, shared by all kernels and kept between launches."""

    def __init__(self):
        self.base = 0
        self.n = 0
        self.stack_size = 0

    def get(self, n: int, stack_kb: int) -> tuple[int, int]:
        size = max(16, stack_kb) * 1024
        if n > self.n or size != self.stack_size:
            if self.base:
                _libc.munmap(self.base, self.n * self.stack_size)
            n = max(n, 64)
            self.base = _map(n * size)
            for i in range(n):  # the lowest page of each stack is its guard
                _libc.mprotect(self.base + i * size, PAGE, PROT_NONE)
            self.n, self.stack_size = n, size
        return self.base, self.n


# ------------------------------------------------------------------ the runtime
class _MslThread(ctypes.Structure):
    pass


class _MslLaunch(ctypes.Structure):
    _fields_ = [
        ("entry", ctypes.c_void_p),
        ("buffers", ctypes.POINTER(ctypes.c_void_p)),
        ("grid", ctypes.c_uint * 3),
        ("threadgroup", ctypes.c_uint * 3),
        ("order", ctypes.c_int),
        ("seed", ctypes.c_ulonglong),
        ("strict", ctypes.c_int),
        ("watchdog_s", ctypes.c_double),
        ("stacks", ctypes.c_void_p),
        ("stack_size", ctypes.c_ulong),
        ("nstacks", ctypes.c_ulong),
        ("tg_mem", ctypes.c_void_p),
        ("tg_mem_size", ctypes.c_ulong),
        ("nranges", ctypes.c_int),
        ("range_lo", ctypes.POINTER(ctypes.c_ulong)),
        ("range_hi", ctypes.POINTER(ctypes.c_ulong)),
        ("err", ctypes.c_char_p),
        ("err_cap", ctypes.c_ulong),
        ("direct", ctypes.c_int),
    ]


class _Runtime:
    def __init__(self):
        path = compiler.runtime_library()
        self.lib = ctypes.CDLL(str(path))
        self.lib.msl_run.argtypes = [ctypes.POINTER(_MslLaunch)]
        self.lib.msl_run.restype = ctypes.c_int
        self.lib.msl_runtime_api.restype = ctypes.c_void_p
        self.api = self.lib.msl_runtime_api()
        self.stacks = _StackPool()
        self.tg_mem = ctypes.create_string_buffer(64 * 1024)
        self.lock = threading.Lock()  # the runtime has one scheduler


_runtime: _Runtime | None = None


def _get_runtime() -> _Runtime:
    global _runtime
    if _runtime is None:
        _runtime = _Runtime()
    return _runtime


_loaded: dict[str, ctypes.CDLL] = {}
_checked: set[str] = set()  # translation units that passed the Metal check in this process


def _load_kernel(tu: str, label: str, instantiation: str = "") -> tuple[ctypes.CDLL, bool]:
    """dlopen a compiled kernel (compiling it if not cached); memoized per TU.

    `instantiation` (`name<args>` for a templated kernel) is what the Metal
    check instantiates, as MLX's `template [[host_name]]` line does.
    """
    check = _settings.address_space_check and tu not in _checked
    lib = _loaded.get(tu)
    if lib is not None and not check:
        return lib, True
    rt = _get_runtime()
    path, cached = compiler.kernel_library(tu, label, check, instantiation)
    if check:
        _checked.add(tu)
    if lib is not None:
        return lib, True
    lib = ctypes.CDLL(str(path))
    lib.msl_bind.argtypes = [ctypes.c_void_p]
    lib.msl_bind(rt.api)
    _loaded[tu] = lib
    return lib, cached


# ------------------------------------------------------------ array <-> bytes
_UINT_OF_SIZE = {1: mx.uint8, 2: mx.uint16, 4: mx.uint32, 8: mx.uint64}


def _raw_numpy(a: mx.array) -> np.ndarray:
    """A numpy view of the array's memory with its strides (any dtype)."""
    if a.dtype in (mx.bfloat16, mx.complex64):
        return np.asarray(a.view(_UINT_OF_SIZE[a.dtype.size]) if a.dtype.size in _UINT_OF_SIZE else a)
    return np.asarray(a)


def _from_bytes(raw: np.ndarray, shape, dtype: mx.Dtype) -> mx.array:
    if dtype == mx.bfloat16:
        return mx.array(raw.view(np.uint16).reshape(shape)).view(mx.bfloat16)
    if dtype == mx.bool_:
        return mx.array(raw.view(np.bool_).reshape(shape))
    np_dtype = {
        mx.float32: np.float32, mx.float16: np.float16, mx.int8: np.int8, mx.int16: np.int16,
        mx.int32: np.int32, mx.int64: np.int64, mx.uint8: np.uint8, mx.uint16: np.uint16,
        mx.uint32: np.uint32, mx.uint64: np.uint64, mx.complex64: np.complex64,
    }[dtype]
    return mx.array(raw.view(np_dtype).reshape(shape))


def _init_bytes(value: float, dtype: mx.Dtype, nbytes: int) -> np.ndarray:
    one = np.frombuffer(bytes(memoryview(_raw_numpy(mx.array(value, dtype=dtype).reshape(1)))), np.uint8)
    return np.resize(one, nbytes)


# ---------------------------------------------------------------- the kernel
_BLOCKING_CALL = re.compile(
    r"\b(threadgroup_barrier|simdgroup_barrier|simd_\w+|quad_\w+|simdgroup_(load|store|multiply\w*))\s*\("
)


class MetalKernel:
    """What `metal_kernel(...)` returns; call it like MLX's kernel object."""

    def __init__(self, name, input_names, output_names, source, header="", ensure_row_contiguous=True,
                 atomic_outputs=False, compile_options=None):
        if not output_names:
            raise ValueError("[metal_kernel] Must specify at least one output.")
        self.name = name
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.source = source
        self.header = header
        self.ensure_row_contiguous = ensure_row_contiguous
        self.atomic_outputs = atomic_outputs
        self.compile_options = compile_options  # accepted; math modes are not modelled
        # Without barriers or SIMD-group functions no thread ever waits for
        # another, and the runtime can skip fibers altogether.
        self.direct = not _BLOCKING_CALL.search(header + "\n" + source)
        self.shape_infos = signature.shape_infos(source, self.input_names)
        self.attributes = signature.attributes(source)
        self.last_compile_cached: bool | None = None
        self._generated: dict = {}  # (inputs, outputs, template) -> generate()

    # -- the generated source
    def _describe_inputs(self, inputs):
        inputs = [x if isinstance(x, mx.array) else mx.array(x) for x in inputs]
        return [signature.InputInfo(a.dtype, a.ndim, a.size) for a in inputs]

    def generate(self, inputs, output_dtypes, template=None):
        """(MLX's kernel name, MLX's full source, our translation unit, params)."""
        template = list(template or [])
        infos = self._describe_inputs(inputs)
        key = (tuple(infos), tuple(output_dtypes), tuple((k, str(v) if isinstance(v, mx.Dtype) else (type(v), v))
                                                         for k, v in template))
        if key in self._generated:
            return self._generated[key]
        kname = signature.kernel_name(self.name, template, infos, output_dtypes)
        sig, params = signature.write_signature_parts(
            kname, self.input_names, infos, self.output_names, output_dtypes, template,
            self.attributes, self.shape_infos, self.atomic_outputs,
        )
        full = signature.mlx_source(self.header, sig, self.source, kname, template)
        tdef = signature.write_template(template) if template else ""
        tu = translate.translation_unit(
            self.header, sig, self.source, kname, template, tdef, params, self.input_names,
            infos, output_dtypes, self.atomic_outputs,
        )
        self._generated[key] = (kname, full, tu, params)
        return kname, full, tu, params

    def __call__(self, inputs, output_shapes, output_dtypes, grid, threadgroup, template=None,
                 init_value=None, verbose=False, stream=None):
        inputs = [x if isinstance(x, mx.array) else mx.array(x) for x in inputs]
        if len(inputs) != len(self.input_names):
            raise ValueError(f"[metal_kernel] Expected `inputs` to have size {len(self.input_names)} "
                             f"but got size {len(inputs)}.")
        if len(output_shapes) != len(self.output_names):
            raise ValueError(f"[metal_kernel] Expected `output_shapes` to have size {len(self.output_names)} "
                             f"but got size {len(output_shapes)}.")
        if len(output_dtypes) != len(self.output_names):
            raise ValueError(f"[metal_kernel] Expected `output_dtypes` to have size {len(self.output_names)} "
                             f"but got size {len(output_dtypes)}.")
        grid = tuple(int(g) for g in grid)
        threadgroup = tuple(int(t) for t in threadgroup)
        if len(grid) != 3 or len(threadgroup) != 3 or min(grid + threadgroup) < 1:
            raise ValueError("[metal_kernel] grid and threadgroup must be three positive sizes.")
        # MLX clamps the group to the grid, then dispatches grid *threads*.
        tg = tuple(min(t, g) for t, g in zip(threadgroup, grid))
        if tg[0] * tg[1] * tg[2] > 1024:
            raise ValueError(f"Thread group size ({tg[0] * tg[1] * tg[2]}) is greater than  the maximum "
                             "allowed threads per threadgroup (1024).")
        if any(d == mx.complex64 for d in [a.dtype for a in inputs] + list(output_dtypes)):
            raise MslUnsupportedError("the MSL executor does not support complex64 arrays (MLX's complex64_t)")
        kname, full, tu, params = self.generate(inputs, output_dtypes, template)
        if verbose:
            print(f"Generated source code for `{self.name}`:\n```\n{full}\n```")
        mx.eval(inputs)
        lib, cached = _load_kernel(tu, kname, kname + (signature.write_template(template) if template else ""))
        self.last_compile_cached = cached
        return _launch(lib, params, inputs, output_shapes, output_dtypes, grid, tg, init_value,
                       self.ensure_row_contiguous, self.input_names, self.output_names, self.direct)


def _launch(lib, params, inputs, output_shapes, output_dtypes, grid, tg, init_value, row_contiguous,
            input_names, output_names, direct=False):
    rt = _get_runtime()
    s = _settings
    keep = []  # ctypes objects that must outlive the call
    guarded: list[GuardedBuffer] = []
    ranges: list[tuple[str, int, int, int]] = []  # (name, lo, hi, itemsize)
    buffers: list[int] = []
    strides_of: dict[int, list[int]] = {}
    data_of: dict[int, int] = {}

    try:
        for i, a in enumerate(inputs):
            raw = _raw_numpy(a)
            item = a.dtype.size
            if row_contiguous or raw.flags["C_CONTIGUOUS"] or a.ndim == 0:
                raw = np.ascontiguousarray(raw)
                nbytes = raw.nbytes
                g = GuardedBuffer(nbytes)
                g.view()[:] = raw.reshape(-1).view(np.uint8)
                data_of[i] = g.addr
                st, acc = [], 1
                for d in reversed(a.shape):
                    st.append(acc)
                    acc *= d
                strides_of[i] = st[::-1]
            else:
                # The kernel sees the array's own memory: copy the span its
                # strides reach and point at element (0, ..., 0).
                lo = sum(min(0, (n - 1) * s_) for n, s_ in zip(raw.shape, raw.strides))
                hi = sum(max(0, (n - 1) * s_) for n, s_ in zip(raw.shape, raw.strides)) + item
                g = GuardedBuffer(hi - lo)
                start = raw.__array_interface__["data"][0] + lo
                ctypes.memmove(g.addr, start, hi - lo)
                data_of[i] = g.addr - lo
                strides_of[i] = [s_ // item for s_ in raw.strides]
            guarded.append(g)
            ranges.append((input_names[i], g.addr, g.addr + g.nbytes, item))

        out_bufs = []
        for k, (shape, dt) in enumerate(zip(output_shapes, output_dtypes)):
            n = int(np.prod(shape)) if len(shape) else 1
            g = GuardedBuffer(n * dt.size)
            if init_value is None:
                g.view()[:] = 0xFF  # poison: NaN for floats, -1 for ints
            else:
                g.view()[:] = _init_bytes(init_value, dt, n * dt.size)
            guarded.append(g)
            out_bufs.append(g)
            ranges.append((output_names[k], g.addr, g.addr + g.nbytes, dt.size))

        for kind, i in params:
            if kind == "attr":
                continue
            a = inputs[i] if kind != "output" else None
            if kind == "input":
                buffers.append(data_of[i])
            elif kind == "shape":
                arr = (ctypes.c_int * max(1, a.ndim))(*a.shape)
                keep.append(arr)
                buffers.append(ctypes.addressof(arr))
            elif kind == "strides":
                arr = (ctypes.c_int64 * max(1, a.ndim))(*strides_of[i])
                keep.append(arr)
                buffers.append(ctypes.addressof(arr))
            elif kind == "ndim":
                arr = ctypes.c_int(a.ndim)
                keep.append(arr)
                buffers.append(ctypes.addressof(arr))
            else:
                buffers.append(out_bufs[i].addr)

        nthreads = tg[0] * tg[1] * tg[2]
        stacks, nstacks = rt.stacks.get(nthreads, s.stack_kb)
        bufarr = (ctypes.c_void_p * max(1, len(buffers)))(*buffers)
        lo_arr = (ctypes.c_ulong * max(1, len(ranges)))(*[r[1] for r in ranges])
        hi_arr = (ctypes.c_ulong * max(1, len(ranges)))(*[r[2] for r in ranges])
        err = ctypes.create_string_buffer(1024)
        L = _MslLaunch()
        L.entry = ctypes.cast(lib.msl_entry, ctypes.c_void_p)
        L.buffers = bufarr
        L.grid[:] = grid
        L.threadgroup[:] = tg
        L.order = _ORDERS[s.order]
        L.seed = s.seed
        L.strict = int(s.strict)
        L.watchdog_s = s.watchdog_s
        L.stacks = stacks
        L.stack_size = rt.stacks.stack_size
        L.nstacks = nstacks
        L.tg_mem = ctypes.addressof(rt.tg_mem)
        L.tg_mem_size = len(rt.tg_mem)
        L.nranges = len(ranges)
        L.range_lo = lo_arr
        L.range_hi = hi_arr
        L.err = ctypes.cast(err, ctypes.c_char_p)
        L.err_cap = len(err)
        L.direct = int(direct)
        with rt.lock:
            rc = rt.lib.msl_run(ctypes.byref(L))
        if rc != 0:
            raise MslRuntimeError(_explain(err.value.decode(errors="replace"), ranges))
        return [_from_bytes(g.view().copy(), shape, dt) for g, shape, dt in zip(out_bufs, output_shapes, output_dtypes)]
    finally:
        for g in guarded:
            g.free()


def _explain(msg: str, ranges) -> str:
    """Turn the runtime's '@OOB i offset size who' into words."""
    if msg.startswith("@OOB "):
        _, i, off, size, who = msg.split(" ", 4)
        name, _, _, item = ranges[int(i)]
        off, size = int(off), int(size)
        return (f"out-of-bounds access to `{name}`: element {off // item} (byte {off}) of a buffer "
                f"with {size // item} elements, in {who}")
    return msg


def metal_kernel(name, input_names, output_names, source, header="", ensure_row_contiguous=True,
                 atomic_outputs=False, compile_options=None) -> MetalKernel:
    """Drop-in for `mx.fast.metal_kernel`: same arguments, same call, runs anywhere."""
    return MetalKernel(name, input_names, output_names, source, header, ensure_row_contiguous,
                       atomic_outputs, compile_options)
