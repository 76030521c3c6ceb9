"""Numbers that stay true: every `<!-- check: CMD -->` marker in docs/ is re-run and compared.

tools/docs_checks.py explains the markers. The commands are the cheap ones (shapes, byte counts,
token counts, launch counts, golden errors) and run in-process, so this takes ~10 s, most of it
loading the default model once. The last tests show that the check has teeth: a figure edited to
a wrong value, or a command that breaks, fails with the file and line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import docs_checks  # noqa: E402  (tools/ is not a package)


def test_every_quoted_figure_matches_its_command():
    n, failures = docs_checks.check_paths(docs_checks.doc_pages())
    assert n >= 8, f"only {n} markers found: did the marker syntax change?"
    assert not failures, "\n".join(map(str, failures))


def test_the_map_and_the_primer_carry_markers():
    for page in ("docs/map.md", "docs/before-you-start.md"):
        assert docs_checks.find_claims(ROOT / page), page


def _edited(page: str, old: str, new: str) -> tuple[Path, str]:
    path = ROOT / page
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{page} no longer says {old!r}: update this test"
    return path, text.replace(old, new, 1)


@pytest.mark.parametrize("page, figure, wrong", [
    ("docs/before-you-start.md", "| 49152 |", "| 50000 |"),              # a table cell
    ("docs/map.md", "`504, 3575, 282, 4649, 314`", "`504, 3575, 282, 4649`"),   # a token list
    ("docs/map.md", "`[1, 3, 5, 64]`", "`[1, 3, 5, 128]`"),                  # a shape
])
def test_a_figure_edited_to_a_wrong_value_fails(page, figure, wrong):
    path, good = _edited(page, figure, figure)
    assert all(docs_checks.check_claim(c) is None for c in docs_checks.find_claims(path, good)
               if figure in c.text)
    path, bad = _edited(page, figure, wrong)
    failures = [f for c in docs_checks.find_claims(path, bad) if (f := docs_checks.check_claim(c))]
    assert len(failures) == 1, failures
    message = str(failures[0])
    assert message.startswith(f"{page}:") and "which the text before the marker does not say" in message


def test_a_broken_command_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("There are 3 of them. <!-- check: python tools/docs_numbers.py no-such-figure -->\n")
    (claim,) = docs_checks.find_claims(page)
    failure = docs_checks.check_claim(claim)
    assert failure is not None and "failed" in failure.message and "no figure named" in failure.message


def test_markers_in_code_are_examples_not_claims(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Write `<!-- check: false -->` after a figure:\n\n```markdown\n"
                    "It is 7. <!-- check: false -->\n```\n\nIt is 7. <!-- check: echo 7 -->\n")
    claims = docs_checks.find_claims(page)
    assert [c.command for c in claims] == ["echo 7"] and docs_checks.check_claim(claims[0]) is None
