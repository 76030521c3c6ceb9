"""Fuzzing the readers an attacker reaches: safetensors, GGUF, config.json, chat templates.

Each target is a pair: a hypothesis strategy that turns a good input into a bad
one (byte flips, truncation, and structured lies: a count, a length, a type, a
dim or an offset replaced by an interesting value), and a `check_*` function,
the property: the reader returns normally or raises FsxError; anything else (a
KeyError, a RecursionError, a crash, a hang) is a bug. tests/test_fuzz.py runs a
few hundred cases of each in CI; bench/fuzz.py runs them for as long as you like.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from fs_mlx.errors import FsxError

# Values that break parsers: boundaries of every integer width, and off-by-ones.
INTERESTING = [0, 1, 2, 3, 7, 8, 31, 32, 33, 255, 256, 4095, 65535, 65536, 2**31 - 1, 2**31,
               2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def _int_values(width: int, original: int):
    top = 2 ** (8 * width) - 1
    return st.one_of(
        st.sampled_from([v for v in INTERESTING if v <= top]),
        st.sampled_from([max(original - 1, 0), min(original + 1, top), original * 2 % (top + 1)]),
        st.integers(0, top),
    )


# --- raw bytes -----------------------------------------------------------------------------

def byte_mutations(data: bytes, hot: int):
    """Flip bytes (mostly in the first `hot` bytes: the header) and/or truncate."""
    n, hot = len(data), min(hot, len(data))
    flips = st.lists(st.tuples(st.one_of(st.integers(0, max(hot - 1, 0)), st.integers(0, n - 1)),
                               st.integers(0, 255)), max_size=8)
    cut = st.one_of(st.just(n), st.integers(0, n))

    @st.composite
    def mutate(draw):
        out = bytearray(data)
        for pos, value in draw(flips):
            out[pos] = value
        return bytes(out[: draw(cut)])
    return mutate()


# --- safetensors ------------------------------------------------------------------------

def small_safetensors() -> bytes:
    """Five tensors of four dtypes, one of them empty: written by the safetensors library."""
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    return save({
        "a": rng.standard_normal((4, 3)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float16),
        "c": rng.integers(0, 2**31, (2, 2)).astype(np.uint32),
        "d": np.zeros((0, 3), np.float32),
        "e": rng.integers(-100, 100, 7).astype(np.int8),
    }, metadata={"format": "np"})


JSON_LIES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.sampled_from(INTERESTING), st.integers(-2**70, 2**70),
              st.floats(allow_nan=True), st.text(max_size=8),
              st.sampled_from(["F32", "F16", "BF16", "U32", "I8", "F8_E4M3", "Q4_0", ""])),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children,
                                                                                max_size=4)),
    max_leaves=6,
)


def safetensors_mutations(data: bytes):
    """Header lies (a field of a tensor replaced), or raw flips and truncation."""
    (n,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    names = sorted(k for k in header if k != "__metadata__")

    @st.composite
    def lie(draw):
        h = json.loads(json.dumps(header))
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(names))
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "<entry>", "<new>"]))
            if not isinstance(h[name], dict):  # an earlier lie replaced the whole entry
                field = "<entry>"
            if field == "<entry>":
                h[name] = draw(JSON_LIES)
            elif field == "<new>":
                h[draw(st.text(max_size=5))] = draw(JSON_LIES)
            elif field == "data_offsets" and draw(st.booleans()):  # near-miss offsets
                begin, end = header[name]["data_offsets"]  # the original's, nudged
                h[name]["data_offsets"] = [begin + draw(st.integers(-8, 8)), end + draw(st.integers(-8, 8))]
            elif field == "shape" and draw(st.booleans()):
                h[name]["shape"] = draw(st.lists(st.sampled_from(INTERESTING[:12]), max_size=9))
            else:
                h[name][field] = draw(JSON_LIES)
        raw = json.dumps(h).encode()
        return struct.pack("<Q", len(raw)) + raw + body
    return st.one_of(lie(), byte_mutations(data, 8 + n))


def check_safetensors(data: bytes) -> str:
    """read_header accepts only what the safetensors library accepts; what it accepts loads."""
    import mlx.core as mx
    from safetensors import SafetensorError, deserialize

    from fs_mlx.formats.safetensors import read_header

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(data)
        try:
            tensors = read_header(path)
        except FsxError:
            return "refused"
        try:
            deserialize(data)
        except SafetensorError as e:
            raise AssertionError(f"fs-mlx accepted a file the safetensors library refuses: {e}") from None
        loaded = mx.load(str(path))
        assert set(loaded) == set(tensors)
        for name, t in tensors.items():
            assert tuple(loaded[name].shape) == t.shape, name
        return "accepted"


# --- GGUF ----------------------------------------------------------------------------------

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_fields(data: bytes) -> tuple[list[tuple[int, int, str]], int]:
    """Where each structural integer of a (valid) GGUF file sits: [(position, width, kind)],
    and where its header ends. Kinds: version, count, strlen, vtype, etype, ndims, dim,
    ttype, offset: the fields a structured lie replaces."""
    fields, pos = [], 4

    def take(width: int, kind: str) -> int:
        nonlocal pos
        fields.append((pos, width, kind))
        value = int.from_bytes(data[pos:pos + width], "little")
        pos += width
        return value

    def string() -> None:
        nonlocal pos
        n = take(8, "strlen")  # (not `pos += take(...)`: that would read pos before take moves it)
        pos += n

    def value(vtype: int) -> None:
        nonlocal pos
        if vtype in _SCALAR_SIZES:
            pos += _SCALAR_SIZES[vtype]
        elif vtype == 8:
            string()
        elif vtype == 9:
            etype, n = take(4, "etype"), take(8, "count")
            for _ in range(n):
                value(etype)

    take(4, "version")
    n_tensors, n_kv = take(8, "count"), take(8, "count")
    for _ in range(n_kv):
        string()
        value(take(4, "vtype"))
    for _ in range(n_tensors):
        string()
        for _ in range(take(4, "ndims")):
            take(8, "dim")
        take(4, "ttype")
        take(8, "offset")
    return fields, pos


def gguf_mutations(data: bytes):
    """Structured lies in counts, lengths, types, dims and offsets; or flips and truncation."""
    fields, header_end = gguf_fields(data)
    # Token strings are most of the fields; keep the lies spread over every kind.
    by_kind: dict[str, list] = {}
    for f in fields:
        by_kind.setdefault(f[2], []).append(f)

    @st.composite
    def lie(draw):
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(sorted(by_kind)))
            pos, width, _ = draw(st.sampled_from(by_kind[kind]))
            original = int.from_bytes(out[pos:pos + width], "little")
            out[pos:pos + width] = draw(_int_values(width, original)).to_bytes(width, "little")
        return bytes(out)
    return st.one_of(lie(), byte_mutations(data, header_end))


def check_gguf(data: bytes) -> str:
    """Loading a mutated GGUF ends in a model or in FsxError."""
    from fs_mlx.loader import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.gguf"
        path.write_bytes(data)
        try:
            load(path, kernels="mlx")
        except FsxError:
            return "refused"
        return "accepted"


# --- config.json ------------------------------------------------------------------------------

CONFIG_VALUES = st.one_of(
    JSON_LIES, st.sampled_from([1e9, 1e12, -1, 0.5, 1e308, -1e-6, "64", "yes", "linear", ["llama"]]),
    st.fixed_dictionaries({"rope_type": st.sampled_from(["linear", "llama3", "yarn", "default", 3])},
                          optional={"factor": JSON_LIES, "low_freq_factor": JSON_LIES,
                                    "high_freq_factor": JSON_LIES}),
)


def config_mutations(config: dict):
    keys = sorted(config) + ["rope_scaling", "rope_parameters", "head_dim", "quantization", "eos_token_id"]

    @st.composite
    def lie(draw):
        c = dict(config)
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(keys))
            if draw(st.integers(0, 9)) == 0:
                c.pop(key, None)
            else:
                c[key] = draw(CONFIG_VALUES)
        return c
    return lie()


def check_config(config: dict, shapes: dict) -> str:
    """A mutated config is refused, or it agrees with the weights' shapes."""
    from fs_mlx.model.config import ModelConfig, check_against_tensors

    try:
        c = ModelConfig.from_dict(config)
        check_against_tensors(c, shapes, "model")
    except FsxError:
        return "refused"
    return "accepted"


# --- chat templates ------------------------------------------------------------------------

_NUMBER = st.sampled_from(["0", "1", "-1", "3", "10**5", "10**9", "10**10", "2**64", "1e308", "(2**31)"])
_STRING = st.sampled_from(["'x'", "''", "'\\ud800'", "'%s'", "'{:>9}'", "'a\\tb'", "messages[0].content"])
_EXPR = st.recursive(
    st.one_of(_NUMBER, _STRING, st.sampled_from(["messages", "range(3)", "loop", "ns.x", "none", "[1, 2]"])),
    lambda e: st.one_of(
        st.tuples(e, st.sampled_from(["*", "+", "~", "%", "**", "/", "//"]), e).map(" ".join),
        st.tuples(e, st.sampled_from(["|tojson(indent={})", "|indent({})", "|center({})", "|join({})",
                                      "|replace('x', {})", "|wordwrap({})", "|batch({})", "|slice({})",
                                      ".center({})", ".ljust({})", ".expandtabs({})", ".format({})",
                                      "|list|length", "|string", "[{}]"]), e)
        .map(lambda t: t[0] + t[1].format(t[2])),
        st.tuples(st.sampled_from(["range({})", "lipsum({})", "cycler({})", "raise_exception({})"]), e)
        .map(lambda t: t[0].format(t[1])),
    ),
    max_leaves=5,
)
_STATEMENT = st.recursive(
    st.one_of(_EXPR.map(lambda e: "{{ " + e + " }}"), st.sampled_from(["x", "{% break %}", "{% continue %}",
                                                                       "{% include 'a' %}"]),
              _EXPR.map(lambda e: "{% set ns.x = " + e + " %}")),
    lambda s: st.one_of(
        st.tuples(_EXPR, s).map(lambda t: "{% for i in " + t[0] + " %}" + t[1] + "{% endfor %}"),
        st.tuples(_EXPR, s).map(lambda t: "{% if " + t[0] + " %}" + t[1] + "{% endif %}"),
        st.tuples(s, s).map("".join),
        s.map(lambda b: "{% macro m(n) %}" + b + "{{ m(n) }}{% endmacro %}{{ m(0) }}"),
    ),
    max_leaves=6,
)
TEMPLATES = _STATEMENT.map(lambda body: "{% set ns = namespace(x=1) %}" + body)


def check_template(source: str, seconds: float = 0.1, steps: int = 5_000) -> str:
    """Rendering a generated template ends in text or in FsxError (the step and time
    limits lowered while fuzzing, so that endless loops end sooner; sizes as always)."""
    from fs_mlx.formats.tokenizer import Tokenizer
    from fs_mlx.generation import sandbox
    from fs_mlx.generation.chat import render

    limits = sandbox.MAX_SECONDS, sandbox.MAX_STEPS
    sandbox.MAX_SECONDS, sandbox.MAX_STEPS = seconds, steps
    try:
        render(Tokenizer(backend=None, chat_template=source), [{"role": "user", "content": "hi"}])
    except FsxError:
        return "refused"
    finally:
        sandbox.MAX_SECONDS, sandbox.MAX_STEPS = limits
    return "accepted"
