"""Hostile chat templates (issue 16): each ends in one FsxError naming the limit, within
seconds and without eating memory; real templates render exactly as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hostile import time_limit
from fs_mlx.errors import FsxError
from fs_mlx.formats.tokenizer import Tokenizer
from fs_mlx.generation.chat import _tojson, render

MESSAGES = [{"role": "user", "content": "hi"}]
# An endless loop ends at the step limit or at the time limit, whichever this machine hits first.
STEPS_OR_TIME = ("more than 1,000,000 steps", "the template ran longer than 2 s")

CASES = [  # (id, template, message or a tuple of alternatives)
    ("tojson-indent", "{{ messages|tojson(indent=10**9) }}", "tojson indent must be an integer in [0, 64]"),
    ("str-times", "{{ 'x' * 10**10 }}", "str * 10000000000 would be 10,000,000,000 long"),
    ("list-times", "{{ [1] * 10**9 }}", "list * 1000000000"),
    ("nested-range", "{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}",
     STEPS_OR_TIME),
    ("loopcontrols", "{% for i in range(10**5) %}{% for j in range(10**5) %}{% continue %}{% endfor %}"
     "{% endfor %}", STEPS_OR_TIME),
    ("lipsum", "{{ lipsum(10**6) }}", "over 10,000 words"),
    ("include", "{% include 'other.jinja' %}", "include is not allowed in chat templates"),
    ("import", "{% import 'macros.jinja' as m %}", "import is not allowed in chat templates"),
    ("from-import", "{% from 'macros.jinja' import m %}", "from-import is not allowed in chat templates"),
    ("extends", "{% extends 'base.jinja' %}", "extends is not allowed in chat templates"),
    ("concat-doubling", "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}", "a str would be 1,048,576 long"),
    ("list-doubling", "{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
     "{% endfor %}", "list + list would be 1,048,576 long"),
    ("pow", "{{ 2 ** 100000 }}", "2 ** 100000 is over 4096 bits"),
    ("center", "{{ 'x'.center(10**10) }}", "the result of center() would be 10,000,000,000 long"),
    ("replace", "{% set s = 'x' * 1000 %}{{ s.replace('x', s) ~ s.replace('x', s) }}", "the result of replace()"),
    ("replace-filter", "{% set s = 'x' * 1000 %}{{ s|replace('x', s * 2) }}", "the result of replace()"),
    ("join", "{% set s = 'x' * 100000 %}{{ ([s] * 10)|join(s) }}", "the result of join() would be 2,000,000"),
    ("str-join", "{% set s = 'x' * 100000 %}{{ s.join([s] * 10) }}", "the result of join() would be 2,000,000"),
    ("percent-width", "{{ '%1000000000s' % 'x' }}", "a format width or precision over 1,000,000"),
    ("format-width", "{{ '{:>1000000000}'.format(1) }}", "a format width or precision over 1,000,000"),
    ("format-nested-width", "{{ '{:>{}}'.format(1, 10**9) }}", "a format width over 1,000,000"),
    ("indent", "{% set s = 'x\\n' * 100000 %}{{ s|indent(1000) }}", "the result of indent()"),
    ("wordwrap", "{{ ('x' * 100000)|wordwrap(1, wrapstring='y' * 100000) }}", "the result of wordwrap()"),
    ("expandtabs", "{{ ('\\t' * 100000).expandtabs(100000) }}", "the result of expandtabs()"),
    ("to-bytes", "{{ (1).to_bytes(10**10, 'big') }}", "the result of to_bytes()"),
    ("slice", "{{ [1]|slice(10**9)|list|length }}", "the result of slice()"),
    ("output", "{% for i in range(10**5) %}{{ 'x' * 1000 }}{% endfor %}", "the rendered text would be 1,001,000"),
    ("set-block", "{% set x %}{% for i in range(10**5) %}{{ 'y' * 100000 }}{% endfor %}{% endset %}",
     "a block's output would be 1,100,000"),
    ("garbage", "{% set ns = namespace(l=[]) %}{% for i in range(10**5) %}{% set ns.l = ns.l + ['v' * 100000] %}"
     "{% endfor %}", ("built more than 64,000,000", STEPS_OR_TIME[1])),
    ("recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed deeper than 100 calls"),
    ("macro-exponential", "{% macro f(n) %}{% if n < 40 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}"
     "{{ f(0) }}", STEPS_OR_TIME),
    ("recursive-loop-branching", "{% for x in [1, 2] recursive %}{{ loop([1, 2]) if loop.depth < 60 }}"
     "{% endfor %}", STEPS_OR_TIME),
    ("zero-division", "{{ 1 / 0 }}", "ZeroDivisionError"),
    ("range-too-big", "{{ range(10**9)|list|length }}", "Range too big"),
    ("raise-exception", "{{ raise_exception('no tools here') }}", "no tools here"),
    ("undefined-call", "{{ foo() }}", "'foo' is undefined"),
    ("syntax", "{% for %}", "Expected an expression"),
    ("python-internals", "{{ ''.__class__.__mro__ }}", "access to attribute '__class__'"),
]


SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}


def tokenizer(template: str) -> Tokenizer:
    return Tokenizer(backend=None, chat_template=template, special_tokens=SPECIAL)


@pytest.mark.parametrize("name, template, message", CASES, ids=[c[0] for c in CASES])
def test_hostile_template_fails_with_its_limit(name, template, message):
    with time_limit(10), pytest.raises(FsxError, match="the model's chat template failed") as e:
        render(tokenizer(template), MESSAGES)
    alternatives = message if isinstance(message, tuple) else (message,)
    assert any(m in str(e.value) for m in alternatives) and "\n" not in str(e.value), str(e.value)


def test_lone_surrogate_becomes_replacement_character():
    out = render(tokenizer("{{ messages[0].content }}|{{ '\\ud800' }}"), [{"role": "user", "content": "a\udc00b"}])
    assert out == "a\ufffdb|\ufffd"
    out.encode("utf-8")  # encodable: the tokenizer can take it


GOLDEN = Path(__file__).parent.parent / "golden" / "checkpoints"


@pytest.mark.parametrize("model", ["qwen3-tiny", "llama-mha"])
def test_real_templates_render_as_in_the_plain_sandbox(model):
    """The limits change nothing for a real template: same text as Jinja's own sandbox
    (as transformers configures it), over a long conversation."""
    source = json.loads((GOLDEN / model / "tokenizer_config.json").read_text())["chat_template"]
    messages = [{"role": "system", "content": "be brief"}]
    for i in range(100):
        messages += [{"role": "user", "content": f"question {i} " * 20},
                     {"role": "assistant", "content": f"answer {i} " * 40}]
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                          extensions=["jinja2.ext.loopcontrols"])
    plain.filters["tojson"] = _tojson
    expected = plain.from_string(source).render(messages=messages, add_generation_prompt=True, **SPECIAL)
    assert render(tokenizer(source), messages) == expected
