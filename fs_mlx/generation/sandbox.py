"""A Jinja sandbox with limits: chat templates are code from the internet.

Jinja's immutable sandbox already stops a template from reaching Python's
internals (no `__class__`, no mutating lists); it does not stop one from asking
for too much: `'x' * 10**10`, `range(10**5)` inside `range(10**5)`, a
`loopcontrols` loop that never ends, `lipsum(10**6)` or `tojson(indent=10**9)`
each ate gigabytes or hung. `BoundedEnvironment` adds the limits:

    every string, list or dict a template builds    <= MAX_SIZE (1M characters / items)
    all of them together, garbage included          <= MAX_BUILT (64M)
    the rendered prompt                             <= MAX_SIZE characters
    loop iterations + calls per render              <= MAX_STEPS (loops, macros, recursion)
    nested macro / recursive loop() calls           <= MAX_DEPTH
    wall time per render                            <= MAX_SECONDS
    integer results                                 <= MAX_INT_BITS bits (10**10**10 never starts)
    include / import / extends                      refused: a chat template is one file

Sizes are checked *before* the operations that multiply them (`*`, `**`, `%`,
`center`, `replace`, `join`, `indent`, `wordwrap`, ...: the result's size is
known from the arguments), and every call's result is checked after. Jinja has
no while loop: a template repeats work only by iterating a {% for %} or by
calling (a macro, a recursive `loop()`), so every loop's iterable is wrapped in
a counter (`check_source` rewrites the parse tree) and every call, operator and
filter counts one step, checking the clock. The cost per reply is measured in
docs/trust.md.
"""

from __future__ import annotations

import math
import re
import time
from contextvars import ContextVar
from functools import wraps
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SIZE = 1_000_000  # characters of any string (and of the prompt), items of any list or dict
MAX_STEPS = 1_000_000  # loop iterations + calls per render (a Qwen3 template over 100 turns: ~3k)
MAX_SECONDS = 2.0
MAX_BUILT = 64 * MAX_SIZE  # everything a render builds, garbage included
MAX_INT_BITS = 4096
MAX_DEPTH = 100  # nested macro / recursive loop() calls (real templates: < 10)
MAX_LIPSUM_WORDS = 10_000
STEPS = "_fsx_count_steps"  # the global every {% for %} iterable is wrapped in


class TemplateLimitError(TemplateError):
    """A chat template asked for more than the sandbox allows."""


def _too_big(what: str, size: int | float) -> TemplateLimitError:
    return TemplateLimitError(f"{what} would be {int(size):,} long, over the limit of {MAX_SIZE:,}")


class _Budget:
    """One render's counters: steps taken, time left, and everything built so far,
    garbage included (a loop that makes a new 100 kB string per step is within
    every size limit, but not within this one)."""

    def __init__(self, seconds: float | None = None):
        self.built = 0
        self.steps = 0
        self.depth = 0  # macro and recursive-loop calls in progress
        self.deadline = time.monotonic() + seconds if seconds is not None else None

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateLimitError(f"the template took more than {MAX_STEPS:,} steps (an endless loop?)")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TemplateLimitError(f"the template ran longer than {MAX_SECONDS:g} s")


_budget: ContextVar[_Budget] = ContextVar("template_budget", default=_Budget())


def _count_steps(iterable):
    """A loop's iterable, one step per item (wrapped around every {% for %})."""
    budget = _budget.get()
    for item in iterable:
        budget.step()
        yield item


def bounded(value: Any) -> Any:
    """`value`, if it fits the size limit and the render's budget."""
    if isinstance(value, (str, bytes, list, tuple, dict, set)):
        if len(value) > MAX_SIZE:
            raise _too_big(f"a {type(value).__name__}", len(value))
        budget = _budget.get()
        budget.built += len(value)
        if budget.built > MAX_BUILT:
            raise TemplateLimitError(f"the template built more than {MAX_BUILT:,} characters/items in all")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError(f"an integer of {value.bit_length()} bits, over {MAX_INT_BITS}")
    return value


# --- the size of a result, known before computing it -----------------------------------

_NUMBERS = re.compile(r"\d+")
_NESTED_SPEC = re.compile(r"\{[^{}]*\{")


def _check_format(fmt: str) -> None:
    """'%1000000000s' / '{:>1000000000}': a width or precision past the limit."""
    if any(len(n) > 7 or int(n) > MAX_SIZE for n in _NUMBERS.findall(fmt)):
        raise TemplateLimitError(f"a format width or precision over {MAX_SIZE:,} in {fmt[:40]!r}")


def _length(x: Any) -> int:
    return len(x) if isinstance(x, (str, bytes, list, tuple, dict)) else len(str(x))


def _estimate(name: str, value: Any, args: tuple, kwargs: dict) -> float:
    """An upper bound on the size of `value.name(*args)` (method) or `value|name(*args)`
    (filter) for the operations whose output can be much larger than their input; 0 if
    the output is at most about the input (those are checked after, by `bounded`)."""
    def arg(i: int, key: str, default: Any = None) -> Any:
        return args[i] if len(args) > i else kwargs.get(key, default)

    def number(x: Any) -> float:
        return x if isinstance(x, (int, float)) and not isinstance(x, bool) else 0

    n = _length(value) if value is not None else 0
    if name in ("center", "ljust", "rjust", "zfill"):
        return number(arg(0, "width", 0))
    if name == "expandtabs":
        return n * max(number(arg(0, "tabsize", 8)), 1)
    if name == "replace":
        old, new = arg(0, "old", ""), arg(1, "new", "")
        if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
            count = value.count(old) if old else n + 1
            return n + count * len(new)
        return 0
    if name == "join":  # str.join(items): value is the separator; the filter: value is the items
        items, sep = (arg(0, "iterable", ()), value) if isinstance(value, str) else (value, arg(0, "d", ""))
        if isinstance(items, (list, tuple)):
            return sum(_length(x) for x in items[:MAX_SIZE + 1]) + len(items) * _length(sep)
        return 0
    if name == "indent":
        width = arg(0, "width", 4)
        pad = len(width) if isinstance(width, str) else number(width)
        return n + (n + 1) * pad
    if name == "wordwrap":
        return n + n * (1 + _length(arg(2, "wrapstring", "\n")))
    if name == "translate":
        table = arg(0, "table", {})
        longest = max((_length(v) for v in table.values()), default=1) if isinstance(table, dict) else 1
        return n * max(longest, 1)
    if name == "slice":  # `slices` lists, however short the value
        return number(arg(0, "slices", 0))
    if name == "to_bytes":
        return number(arg(0, "length", 1))
    if name in ("format", "format_map") and isinstance(value, str):
        _check_format(value)
        return 0
    return 0


def _guard(name: str, value: Any, args: tuple, kwargs: dict) -> None:
    size = _estimate(name, value, args, kwargs)
    if size > MAX_SIZE:
        raise _too_big(f"the result of {name}()", size)


def _guarded_filter(name: str, f):
    """A filter that checks its result's size before (when known) and after."""
    @wraps(f)  # keeps jinja_pass_arg: a filter marked pass_environment still gets it
    def run(*args, **kwargs):
        _budget.get().step()
        pass_arg = getattr(f, "jinja_pass_arg", None)
        rest = args[1:] if pass_arg is not None else args  # drop the environment/context
        if rest:
            _guard(name, rest[0], rest[1:], kwargs)
        return bounded(f(*args, **kwargs))
    return run


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    from jinja2.utils import generate_lorem_ipsum

    if not all(isinstance(x, int) for x in (n, min, max)) or n * max > MAX_LIPSUM_WORDS:
        raise TemplateLimitError(f"lipsum(n={n!r}, max={max!r}) is over {MAX_LIPSUM_WORDS:,} words")
    return generate_lorem_ipsum(n, html, min, max)


# --- the environment ----------------------------------------------------------------------

class _Buffer(list):
    """The output of a {% set %} block, a macro or a loop body: size-checked as it grows."""

    size = 0

    def append(self, piece) -> None:
        self.size += len(piece) if isinstance(piece, str) else 1
        if self.size > MAX_SIZE:
            raise _too_big("a block's output", self.size)
        super().append(piece)

    def extend(self, pieces) -> None:
        for piece in pieces:
            self.append(piece)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's compiler, with each `a ~ b` result and each output buffer size-checked."""

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.bounded(")
        super().visit_Concat(node, frame)
        self.write(")")

    def buffer(self, frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.new_buffer()")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options):
        super().__init__(**options)
        self.filters = {name: _guarded_filter(name, f) for name, f in self.filters.items()}
        self.globals["lipsum"] = _lipsum
        self.globals[STEPS] = _count_steps

    bounded = staticmethod(bounded)
    new_buffer = _Buffer

    def wrap_str_format(self, value: Any):
        """'{:>1000000000}'.format(1): the width is refused when `.format` is looked up."""
        inner = super().wrap_str_format(value)
        if inner is None:
            return None
        fmt = value.__self__
        _check_format(fmt)

        @wraps(inner)
        def checked(*args, **kwargs):
            if _NESTED_SPEC.search(fmt) and any(  # '{:{}}'.format(x, 10**9): the width is an argument
                    isinstance(v, int) and abs(v) > MAX_SIZE for v in (*args, *kwargs.values())):
                raise TemplateLimitError(f"a format width over {MAX_SIZE:,}")
            return bounded(inner(*args, **kwargs))
        return checked

    def concat(self, pieces) -> str:  # noqa: A003 (Jinja's name): every buffer and the output
        out, size = [], 0
        for piece in pieces:
            size += len(piece)
            if size > MAX_SIZE:
                raise _too_big("the rendered text", size)
            out.append(piece)
        return "".join(out)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _budget.get().step()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int):
                    if len(seq) * times > MAX_SIZE:
                        raise _too_big(f"{type(seq).__name__} * {times}", len(seq) * times)
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise TemplateLimitError(f"an integer product over {MAX_INT_BITS} bits")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                if right * math.log2(abs(left)) > MAX_INT_BITS:
                    raise TemplateLimitError(f"{left} ** {right} is over {MAX_INT_BITS} bits")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
                if len(left) + len(right) > MAX_SIZE:
                    raise _too_big(f"{type(left).__name__} + {type(left).__name__}", len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
            values = right if isinstance(right, tuple) else (right,)
            if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_SIZE for v in values):
                if "*" in left:  # '%*s' takes its width from the values
                    raise TemplateLimitError(f"a '%*' width over {MAX_SIZE:,}")
        return bounded(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        budget = _budget.get()
        budget.step()  # macros, recursive loop() calls, methods, globals
        if isinstance(__obj, (Macro, LoopContext)):  # the calls that can recurse
            if isinstance(__obj, LoopContext) and args:  # loop(children): the new level's items count too
                args = (_count_steps(args[0]), *args[1:])
            budget.depth += 1
            try:
                if budget.depth > MAX_DEPTH:
                    raise TemplateLimitError(f"the template recursed deeper than {MAX_DEPTH} calls")
                return bounded(super().call(__context, __obj, *args, **kwargs))
            finally:
                budget.depth -= 1
        name = getattr(__obj, "__name__", "")
        owner = getattr(__obj, "__self__", None)
        if owner is not None and not isinstance(owner, type):
            _guard(name, owner, args, kwargs)
        return bounded(super().call(__context, __obj, *args, **kwargs))


def check_source(env: BoundedEnvironment, source: str):
    """Parse a template, refusing what a one-file chat template never needs, and make
    every {% for %} count its iterations (the parse tree's loops get `_count_steps`)."""
    tree = env.parse(source)
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        kind = type(node).__name__.lower().replace("fromimport", "from-import")
        raise TemplateError(f"{kind} is not allowed in chat templates (line {node.lineno}); "
                            "a chat template is one self-contained file")
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name(STEPS, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
    return tree


# --- a render with its budget ------------------------------------------------------------

def render_bounded(template, **variables) -> str:
    """template.render(**variables) within MAX_STEPS steps, MAX_SECONDS and MAX_BUILT."""
    budget = _budget.set(_Budget(MAX_SECONDS))
    try:
        return template.render(**variables)
    except RecursionError:
        raise TemplateLimitError("the template recursed too deeply") from None
    finally:
        _budget.reset(budget)
