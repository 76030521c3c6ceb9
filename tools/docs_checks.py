"""Numbers that stay true: re-run the command written next to a figure in docs/ and compare.

A chapter quotes a figure and writes, right after it, the command that produces it:

    The golden qwen3-tiny is 1,005,600 bytes. <!-- check: python tools/docs_numbers.py golden-bytes -->

The marker is an HTML comment: invisible on the site and on GitHub, visible to whoever edits the
text. Every line the command prints must appear, word for word (whitespace collapsed), in the text
the marker closes: from the previous blank line or the previous marker up to the marker. So a
command prints the figure the way the text writes it ("1,005,600", "| 576 |"), and editing either
the text or the engine so that they disagree fails `tests/test_docs_numbers.py`.

Only cheap figures get a marker (token counts, shapes, byte counts, launch counts, golden errors:
each well under a second); timings are quoted with their machine and date instead.

    python tools/docs_checks.py                 # check every page in docs/
    python tools/docs_checks.py docs/kv-cache.md

Commands run in-process where they can (the `fsx` CLI, `python tools/x.py`, `python -m pkg`), so
MLX is imported once; anything else (a pipe, another program) runs in a shell at the repository root.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!--\s*check:\s*(?P<cmd>.+?)\s*-->")
TIMEOUT_S = 60


@dataclass
class Claim:
    path: Path
    line: int      # 1-based line of the marker
    command: str
    text: str      # the text the marker closes


@dataclass
class Failure:
    claim: Claim
    message: str

    def __str__(self) -> str:
        rel = os.path.relpath(self.claim.path, ROOT)
        return f"{rel}:{self.claim.line}: {self.message}"


def find_claims(path: Path, text: str | None = None) -> list[Claim]:
    text = path.read_text(encoding="utf-8") if text is None else text
    claims, region, in_fence = [], [], False
    for n, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if in_fence or line.lstrip().startswith(("```", "~~~")):
            region.append(line)      # a marker shown in a code block is an example, not a claim
            continue
        if not line.strip():
            region = []
            continue
        pos = 0
        for m in MARKER.finditer(line):
            if line[:m.start()].count("`") % 2:
                continue             # inside `inline code`: an example too
            region.append(line[pos:m.start()])
            claims.append(Claim(path, n, m.group("cmd"), "\n".join(region)))
            region, pos = [], m.end()
        region.append(line[pos:])
    return claims


def _collapse(s: str) -> str:
    return " ".join(s.split())


def _cli_main():
    try:
        from fs_mlx.apps.cli import main
    except ImportError:        # before the package was split into stages
        from fs_mlx.cli import main
    return main


def run_command(command: str) -> str:
    """stdout of `command`, run at the repository root (in-process when it is Python)."""
    argv = shlex.split(command)
    if any(tok in command for tok in ("|", ">", "<", ";", "&&")) or not argv:
        return _shell(command)
    if argv[0] == "fsx":
        from click.testing import CliRunner

        result = CliRunner().invoke(_cli_main(), argv[1:], catch_exceptions=False)
        if result.exit_code != 0:
            raise RuntimeError(f"exit status {result.exit_code}: {result.output.strip()[-500:]}")
        return result.stdout
    if argv[0] in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        module = _tool_module(argv[1])
        if hasattr(module, "main"):      # imported once: what it caches (a loaded model) stays loaded
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = module.main(argv[2:])
            if code:
                raise RuntimeError(f"exit status {code}: {err.getvalue().strip()[-500:]}")
            return out.getvalue()
    if argv[0] in ("python", "python3") and len(argv) > 1 and argv[1] != "-c":
        out, old_argv, old_cwd = io.StringIO(), sys.argv, os.getcwd()
        try:
            os.chdir(ROOT)
            with contextlib.redirect_stdout(out):
                if argv[1] == "-m":
                    sys.argv = argv[2:]
                    runpy.run_module(argv[2], run_name="__main__", alter_sys=False)
                else:
                    sys.argv = argv[1:]
                    runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                raise RuntimeError(f"exit status {e.code}: {out.getvalue().strip()[-500:]}") from None
        finally:
            sys.argv = old_argv
            os.chdir(old_cwd)
        return out.getvalue()
    return _shell(command)


_modules: dict[str, object] = {}


def _tool_module(path: str):
    import importlib.util

    if path not in _modules:
        spec = importlib.util.spec_from_file_location(f"_docs_tool_{len(_modules)}", ROOT / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[path] = module
    return _modules[path]


def _shell(command: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = re.sub(r"^fsx\b", f"{shlex.quote(sys.executable)} -m fs_mlx", command)
    done = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"exit status {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def check_claim(claim: Claim, cache: dict[str, str] | None = None) -> Failure | None:
    try:
        output = cache[claim.command] if cache is not None and claim.command in cache else run_command(claim.command)
    except Exception as e:  # the command itself broke: that is a failure of the claim too
        return Failure(claim, f"`{claim.command}` failed: {type(e).__name__}: {e}")
    if cache is not None:
        cache[claim.command] = output
    said = _collapse(claim.text)
    expected = [_collapse(l) for l in output.splitlines() if l.strip()]
    if not expected:
        return Failure(claim, f"`{claim.command}` printed nothing to compare with")
    missing = [e for e in expected if e not in said]
    if missing:
        quoted = said if len(said) < 300 else said[:140] + " … " + said[-140:]
        return Failure(claim, f"`{claim.command}` printed {missing[0]!r}, which the text before the marker "
                              f"does not say: {quoted!r}")
    return None


def check_paths(paths) -> tuple[int, list[Failure]]:
    cache: dict[str, str] = {}
    claims = [c for p in paths for c in find_claims(Path(p))]
    failures = [f for c in claims if (f := check_claim(c, cache)) is not None]
    return len(claims), failures


def doc_pages() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] or doc_pages()
    n, failures = check_paths(paths)
    for f in failures:
        print(f, file=sys.stderr)
    print(f"{n} figures checked, {len(failures)} wrong")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
