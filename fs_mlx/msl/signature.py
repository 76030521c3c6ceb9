"""The kernel source MLX generates around a `mx.fast.metal_kernel` body.

This is a line-by-line port of `write_signature`, `write_template` and the
kernel naming in MLX 0.32's `mlx/backend/metal/custom_kernel.cpp`/`fast.cpp`,
so that a body that compiles here sees exactly the parameters it would see on
a Mac: inputs as `const device T*` (or `constant` when they hold fewer than 8
elements, `constant T&` when 0-d), `<name>_shape`/`_strides`/`_ndim` only when
the body mentions them, thread attributes found by substring, and MLX's type
names (`float16_t`, `bfloat16_t`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import mlx.core as mx

# Inputs with fewer elements are passed in the constant address space.
MAX_CONSTANT_ARRAY_SIZE = 8

# (attribute, type), in MLX's order; a body that mentions the name gets it.
METAL_ATTRIBUTES = [
    ("dispatch_quadgroups_per_threadgroup", "uint"),
    ("dispatch_simdgroups_per_threadgroup", "uint"),
    ("dispatch_threads_per_threadgroup", "uint3"),
    ("grid_origin", "uint3"),
    ("grid_size", "uint3"),
    ("quadgroup_index_in_threadgroup", "uint"),
    ("quadgroups_per_threadgroup", "uint"),
    ("simdgroup_index_in_threadgroup", "uint"),
    ("simdgroups_per_threadgroup", "uint"),
    ("thread_execution_width", "uint"),
    ("thread_index_in_quadgroup", "uint"),
    ("thread_index_in_simdgroup", "uint"),
    ("thread_index_in_threadgroup", "uint"),
    ("thread_position_in_grid", "uint3"),
    ("thread_position_in_threadgroup", "uint3"),
    ("threadgroup_position_in_grid", "uint3"),
    ("threadgroups_per_grid", "uint3"),
    ("threads_per_grid", "uint3"),
    ("threads_per_simdgroup", "uint"),
    ("threads_per_threadgroup", "uint3"),
]

_TYPE_STRINGS = {
    mx.float32: "float",
    mx.float16: "float16_t",
    mx.bfloat16: "bfloat16_t",
    mx.bool_: "bool",
    mx.int8: "int8_t",
    mx.int16: "int16_t",
    mx.int32: "int32_t",
    mx.int64: "int64_t",
    mx.uint8: "uint8_t",
    mx.uint16: "uint16_t",
    mx.uint32: "uint32_t",
    mx.uint64: "uint64_t",
    mx.complex64: "complex64_t",
}


def type_string(dtype: mx.Dtype) -> str:
    """MLX's `get_type_string`: the Metal spelling of a dtype."""
    try:
        return _TYPE_STRINGS[dtype]
    except KeyError:
        raise ValueError(f"[metal_kernel] Unsupported dtype {dtype} (Metal has no such type).") from None


@dataclass(frozen=True)
class InputInfo:
    """What the signature needs to know about one input array."""

    dtype: mx.Dtype
    ndim: int
    size: int

    @property
    def location(self) -> str:
        return "constant" if self.size < MAX_CONSTANT_ARRAY_SIZE else "device"


def shape_infos(source: str, input_names: list[str]) -> list[tuple[bool, bool, bool]]:
    """(shape, strides, ndim) per input: does the body mention `<name>_shape`...?"""
    return [(f"{n}_shape" in source, f"{n}_strides" in source, f"{n}_ndim" in source) for n in input_names]


def attributes(source: str) -> list[tuple[str, str]]:
    """The thread attributes the body names, found by substring (as MLX does)."""
    return [(a, t) for a, t in METAL_ATTRIBUTES if a in source]


def template_value(value) -> str:
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "1" if value else "0"  # std::ostream << bool
    if isinstance(value, int):
        return str(value)
    if isinstance(value, mx.Dtype):
        return type_string(value)
    raise ValueError(f"[metal_kernel] Template argument must be int, bool or Dtype, got {type(value).__name__}.")


def template_kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "typename"


def write_template(template: list[tuple[str, object]]) -> str:
    return "<" + ", ".join(template_value(v) for _, v in template) + ">"


def kernel_name(name: str, template, inputs: list[InputInfo], output_dtypes) -> str:
    """`custom_kernel_<name>[_<template hash>]_<in dtypes>_<out dtypes>`."""
    kname = "custom_kernel_" + name
    if template:
        thash = re.sub(r"<|>|(, )", "_", write_template(template))[:-1]
        kname += "_" + thash
    for inp in inputs:
        kname += "_" + type_string(inp.dtype)
        if inp.ndim == 0:
            kname += "s"
        elif inp.size < MAX_CONSTANT_ARRAY_SIZE:
            kname += "c"
    for dt in output_dtypes:
        kname += "_" + type_string(dt)
    return kname


def write_signature_parts(
    func_name: str,
    input_names: list[str],
    inputs: list[InputInfo],
    output_names: list[str],
    output_dtypes,
    template,
    attrs: list[tuple[str, str]],
    infos: list[tuple[bool, bool, bool]],
    atomic_outputs: bool,
) -> tuple[str, list[tuple[str, str]]]:
    """The text from `template <...>` to the opening brace, and the parameters.

    Returns (text, params) where params lists (kind, detail) per parameter in
    order: ("input", i), ("shape", i), ("strides", i), ("ndim", i),
    ("output", i) or ("attr", name): what the executor binds to each.
    """
    text = ""
    if template:
        text += "template <" + ", ".join(f"{template_kind(v)} {k}" for k, v in template) + ">\n"
    text += "[[kernel]] void " + func_name + "(\n"
    params: list[tuple[str, object]] = []
    index = 0
    for i, (name, inp) in enumerate(zip(input_names, inputs)):
        ref = "&" if inp.ndim == 0 else "*"
        text += f"  const {inp.location} {type_string(inp.dtype)}{ref} {name} [[buffer({index})]],\n"
        params.append(("input", i))
        index += 1
        if inp.ndim > 0:
            s, st, nd = infos[i]
            if s:
                text += f"  const constant int* {name}_shape [[buffer({index})]],\n"
                params.append(("shape", i))
                index += 1
            if st:
                text += f"  const constant int64_t* {name}_strides [[buffer({index})]],\n"
                params.append(("strides", i))
                index += 1
            if nd:
                text += f"  const constant int& {name}_ndim [[buffer({index})]],\n"
                params.append(("ndim", i))
                index += 1
    for i, (name, dt) in enumerate(zip(output_names, output_dtypes)):
        ts = type_string(dt)
        if atomic_outputs:
            ts = f"atomic<{ts}>"
        text += f"  device {ts}* {name} [[buffer({index})]]"
        params.append(("output", i))
        # MLX's quirk, kept: the comparison counts buffers, not inputs.
        if index < len(inputs) + len(output_names) - 1 or attrs:
            text += ",\n"
        else:
            text += ") {\n"
        index += 1
    for k, (attr, dtype) in enumerate(attrs):
        text += f"  {dtype} {attr} [[{attr}]]"
        params.append(("attr", attr))
        text += ",\n" if k < len(attrs) - 1 else ") {\n"
    return text, params


def mlx_source(header: str, signature: str, source: str, func_name: str, template) -> str:
    """The full text MLX hands to the Metal compiler (what verbose=True prints)."""
    text = header + signature + source + "\n}\n"
    if template:
        tdef = func_name + write_template(template)
        text += f'\ntemplate [[host_name("{func_name}")]] [[kernel]] decltype({tdef}) {tdef};\n'
    return text
