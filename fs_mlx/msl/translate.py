"""Turn MLX's kernel source into a C++ translation unit clang can compile.

Almost all of Metal is handled by `metal_runtime.h` (types, functions, address
space keywords as macros). What a header cannot do is done here, on the text,
always keeping every line where it was so that compile errors point at the
kernel author's own line numbers:

* `threadgroup T name[N];` becomes `auto& name = msl_tg_var<T[N]>();` — fibers
  have private stacks, so threadgroup memory must come from the runtime;
* half literals (`1.0h`) become `((half)1.0f)`;
* `#include <metal_stdlib>` and friends become blank lines;
* constructs the executor cannot run (textures, samplers, ...) are refused
  with an error that names them.
"""

from __future__ import annotations

import re

from fs_mlx.msl.errors import MslUnsupportedError
from fs_mlx.msl.signature import InputInfo, type_string

_METAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*[<"](metal_\w+|[\w/]*mlx/backend/metal/kernels/utils\.h)[>"].*$', re.M)
_HALF_LITERAL = re.compile(r"(?<![\w.])((?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)[hH]\b")
# threadgroup <type> <name><dims>;   (one declarator, no initializer)
_TG_DECL = re.compile(
    r"\bthreadgroup\s+((?:const\s+)?(?:metal::)?[A-Za-z_]\w*(?:\s*<[^;{}()]*?>)?)\s+([A-Za-z_]\w*)\s*((?:\[[^\]\n]+\]\s*)*);"
)
_TG_WORD = re.compile(r"\bthreadgroup\b(?!_)")

_UNSUPPORTED = [
    (re.compile(r"\b(texture\w*|depth2d\w*|depthcube\w*)\s*<"), "texture types"),
    (re.compile(r"\bsampler\b"), "samplers"),
    (re.compile(r"\bimageblock\b"), "imageblocks"),
    (re.compile(r"\b\w*_function_table\b"), "function tables"),
    (re.compile(r"\bacceleration_structure\b"), "ray-tracing acceleration structures"),
    (re.compile(r"\bos_log\b"), "os_log (print with an extra output buffer instead)"),
]


def _strip_comments_keep_lines(text: str) -> str:
    """Blank out comments (keeping newlines) so scans do not see them."""

    def repl(m: re.Match) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    return re.sub(r"//[^\n]*|/\*.*?\*/", repl, text, flags=re.S)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def rewrite(text: str, part: str) -> str:
    """Rewrite a header or body so clang accepts it; `part` names it in errors."""
    code = _strip_comments_keep_lines(text)
    for pattern, what in _UNSUPPORTED:
        m = pattern.search(code)
        if m:
            raise MslUnsupportedError(
                f"the MSL executor does not support {what}: `{m.group(0).strip()}` at line "
                f"{_line_of(code, m.start())} of the kernel {part}"
            )
    text = _METAL_INCLUDE.sub("", text)
    text = _HALF_LITERAL.sub(r"((half)\1f)", text)
    # Threadgroup declarations; comments were blanked in `code`, so find
    # matches there and splice the same spans of `text`.
    code = _strip_comments_keep_lines(text)
    out, last = [], 0
    for m in _TG_DECL.finditer(code):
        ttype, name, dims = m.group(1), m.group(2), re.sub(r"\s+", "", m.group(3))
        out.append(text[last : m.start()])
        out.append(f"auto& {name} = msl_tg_var<threadgroup {ttype}{dims}>();")
        last = m.end()
    out.append(text[last:])
    text = "".join(out)
    # Any other `threadgroup` must qualify a pointer or reference.
    code = _strip_comments_keep_lines(text)
    for m in _TG_WORD.finditer(code):
        if code[max(0, m.start() - 11) : m.start()] == "msl_tg_var<":
            continue  # one we wrote
        rest = re.match(r"[^;,(){}=]*", code[m.end() :]).group(0)
        if "*" not in rest and "&" not in rest:
            raise MslUnsupportedError(
                f"unsupported threadgroup declaration at line {_line_of(code, m.start())} of the kernel "
                f"{part}: declare one `threadgroup T name[N];` per statement, without an initializer"
            )
    return text


def _arg_expr(kind: str, detail, buf_index: int, input_names, inputs: list[InputInfo], output_dtypes, atomic: bool) -> str:
    """The argument the generated entry passes for one kernel parameter."""
    b = f"(uintptr_t)b[{buf_index}]"
    if kind == "input":
        inp = inputs[detail]
        t = type_string(inp.dtype)
        if inp.ndim == 0:
            return f"*(const {inp.location} {t}*)({b})"
        return f"(const {inp.location} {t}*)({b})"
    if kind == "shape":
        return f"(const constant int*)({b})"
    if kind == "strides":
        return f"(const constant int64_t*)({b})"
    if kind == "ndim":
        return f"*(const constant int*)({b})"
    if kind == "output":
        t = type_string(output_dtypes[detail])
        if atomic:
            t = f"atomic<{t}>"
        return f"(device {t}*)({b})"
    raise AssertionError(kind)


_ATTR_EXPR = {
    "dispatch_quadgroups_per_threadgroup": "t->dispatch_quadgroups_per_threadgroup",
    "dispatch_simdgroups_per_threadgroup": "t->dispatch_simdgroups_per_threadgroup",
    "dispatch_threads_per_threadgroup": "msl_u3(t->dispatch_threads_per_threadgroup)",
    "grid_origin": "metal::uint3(0)",
    "grid_size": "msl_u3(t->threads_per_grid)",
    "quadgroup_index_in_threadgroup": "t->quadgroup_index_in_threadgroup",
    "quadgroups_per_threadgroup": "t->quadgroups_per_threadgroup",
    "simdgroup_index_in_threadgroup": "t->simdgroup_index_in_threadgroup",
    "simdgroups_per_threadgroup": "t->simdgroups_per_threadgroup",
    "thread_execution_width": "32u",
    "thread_index_in_quadgroup": "t->thread_index_in_quadgroup",
    "thread_index_in_simdgroup": "t->thread_index_in_simdgroup",
    "thread_index_in_threadgroup": "t->thread_index_in_threadgroup",
    "thread_position_in_grid": "msl_u3(t->thread_position_in_grid)",
    "thread_position_in_threadgroup": "msl_u3(t->thread_position_in_threadgroup)",
    "threadgroup_position_in_grid": "msl_u3(t->threadgroup_position_in_grid)",
    "threadgroups_per_grid": "msl_u3(t->threadgroups_per_grid)",
    "threads_per_grid": "msl_u3(t->threads_per_grid)",
    "threads_per_simdgroup": "32u",
    "threads_per_threadgroup": "msl_u3(t->threads_per_threadgroup)",
}


def translation_unit(
    header: str,
    signature: str,
    source: str,
    func_name: str,
    template,
    template_def: str,
    params,
    input_names,
    inputs: list[InputInfo],
    output_dtypes,
    atomic_outputs: bool,
) -> str:
    """The C++ file: runtime header, the kernel as MLX writes it, an entry point.

    `#line` directives name the parts "header" and "body" so that clang
    reports errors (and the runtime reports barrier sites) in the kernel
    author's own line numbers.
    """
    parts = ['#include "metal_runtime.h"\n']
    parts.append('#line 1 "header"\n')
    parts.append(rewrite(header, "header"))
    parts.append('\n#line 1 "signature"\n')
    parts.append(signature)
    parts.append('#line 1 "body"\n')
    parts.append(rewrite(source, "body"))
    parts.append('\n#line 1 "generated"\n}\n')
    call = func_name + (template_def if template else "")
    args = []
    for buf_index, (kind, detail) in enumerate(p for p in params if p[0] != "attr"):
        args.append(_arg_expr(kind, detail, buf_index, input_names, inputs, output_dtypes, atomic_outputs))
    args += [_ATTR_EXPR[detail] for kind, detail in params if kind == "attr"]
    parts.append(
        'extern "C" __attribute__((visibility("default"))) '
        "void msl_entry(void* const* b, msl_thread* t) {\n"
        "  (void)b; (void)t;\n"
        f"  {call}(\n    " + ",\n    ".join(args) + ");\n}\n"
    )
    return "".join(parts)
