"""MkDocs hooks for the learning site (mkdocs.yml: `hooks: [tools/docs_site.py]`).

Four things MkDocs does not do on its own:

1. Links from a chapter into the repository (`[cache.py](../fs_mlx/generation/cache.py#L10-L40)`)
   work on GitHub but point outside `docs/`. Here each such file becomes a page of the site
   (`code/fs_mlx/generation/cache.py/`, highlighted, one anchor per line `#L10`), so the book
   reads offline and a link to a file or line that does not exist fails `mkdocs build --strict`.
2. Formulas (`$…$`, `$$…$$`, found by pymdownx.arithmatex) become MathML at build time:
   browsers render it natively, no MathJax download, no JavaScript.
3. A page in `docs/` that `nav` does not list is still reachable, under "More chapters",
   so a new chapter never breaks the build (and `tests/test_docs_site.py` asks for its nav entry).
4. Nothing else: the site is plain MkDocs + Material.
"""

from __future__ import annotations

import html
import logging
import os
import posixpath
import re

from mkdocs.structure.files import File, InclusionLevel
from mkdocs.structure.nav import Section

log = logging.getLogger("mkdocs.plugins.fs_mlx_docs")

CODE_PREFIX = "code/"
# Repository files a chapter may link to, and so become pages. Binary and huge files are not pages.
TEXT_SUFFIXES = {".py", ".metal", ".h", ".cpp", ".c", ".toml", ".sh", ".md", ".json", ".yml", ".yaml", ".txt", ".cfg",
                 ".html", ".css", ".js", ".jinja"}
MAX_SOURCE_BYTES = 400_000

# [text](target "title") — the target may carry an anchor; images too (![alt](target)).
INLINE_LINK = re.compile(r"(\]\()(?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
REFERENCE_LINK = re.compile(r"^(?P<lead>\s{0,3}\[[^\]]+\]:\s*)(?P<target>\S+)", re.M)
FENCE = re.compile(r"^(\s*)(```|~~~)")
LINE_ANCHOR = re.compile(r"^L(\d+)(?:-L(\d+))?$")


def _repo_root(config) -> str:
    return os.path.dirname(os.path.abspath(config["config_file_path"]))


def _split_fences(markdown: str):
    """Yield (is_code, text) chunks so links inside fenced code blocks are left alone."""
    chunk, in_fence, marker = [], False, None
    for line in markdown.splitlines(keepends=True):
        m = FENCE.match(line)
        if m and (not in_fence or m.group(2) == marker):
            if not in_fence:
                yield False, "".join(chunk)
                chunk, in_fence, marker = [line], True, m.group(2)
            else:
                chunk.append(line)
                yield True, "".join(chunk)
                chunk, in_fence, marker = [], False, None
            continue
        chunk.append(line)
    yield in_fence, "".join(chunk)


INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)


def _outside_inline_code(text: str, fn) -> str:
    """Apply fn to the text between `inline code` spans (a link shown as code is an example)."""
    out, pos = [], 0
    for m in INLINE_CODE.finditer(text):
        out.append(fn(text[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(fn(text[pos:]))
    return "".join(out)


def repo_target(page_src_uri: str, target: str) -> tuple[str, str] | None:
    """A link that leaves docs/ for the repository → (path in the repo, anchor); else None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None
    path, _, anchor = target.partition("#")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(page_src_uri), path))
    if not joined.startswith("../"):
        return None
    return joined[3:], anchor


def python_symbol_lines(path: str, symbol: str) -> tuple[int, int] | None:
    """First and last line of `symbol` ('decode_tokens', 'KVCache.trim') in a Python file.

    A chapter links `../fs_mlx/generation/cache.py#KVCache.trim`; the site turns it into the
    line range it has in this build, so the range stays true when the file changes.
    """
    import ast

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    scope: list = tree.body
    node = None
    for name in symbol.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            # a module-level constant: NAME = ... / NAME: T = ...
            for n in scope:
                targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    node = n
            if node is None:
                return None
        scope = getattr(node, "body", [])
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno


def code_page_uri(repo_path: str, is_dir: bool) -> str:
    return CODE_PREFIX + repo_path.rstrip("/") + ("/index.md" if is_dir else ".md")


# ---------------------------------------------------------------------------------------------
# 1. Repository files as pages
# ---------------------------------------------------------------------------------------------

def _linked_repo_paths(config) -> set[str]:
    """Every repository path any chapter links to (files and directories)."""
    docs_dir, root = config["docs_dir"], _repo_root(config)
    wanted: set[str] = set()
    for dirpath, _, names in os.walk(docs_dir):
        for name in names:
            if not name.endswith(".md"):
                continue
            src_uri = os.path.relpath(os.path.join(dirpath, name), docs_dir).replace(os.sep, "/")
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                text = f.read()
            for is_code, chunk in _split_fences(text):
                if is_code:
                    continue
                chunk = INLINE_CODE.sub("", chunk)
                for regex in (INLINE_LINK, REFERENCE_LINK):
                    for m in regex.finditer(chunk):
                        hit = repo_target(src_uri, m.group("target"))
                        if hit and os.path.exists(os.path.join(root, hit[0])):
                            wanted.add(hit[0].rstrip("/"))
    return wanted


def _source_page(repo_path: str, text: str) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import CppLexer, get_lexer_for_filename, TextLexer

    try:
        lexer = CppLexer() if repo_path.endswith((".metal", ".h")) else get_lexer_for_filename(repo_path)
    except Exception:
        lexer = TextLexer()
    # linespans wraps each line (multi-line tokens included) in <span id="L-n">; renamed to #Ln below.
    body = highlight(text, lexer, HtmlFormatter(cssclass="highlight fsx-source", linenos="inline",
                                                 linespans="L", anchorlinenos=True, lineanchors="n"))
    body = re.sub(r'id="L-(\d+)"', r'id="L\1"', body)
    body = re.sub(r'href="#n-(\d+)"', r'href="#L\1"', body)
    n = text.count("\n") + (0 if text.endswith("\n") else 1)
    return (f"---\nsearch:\n  exclude: true\n---\n\n# `{repo_path}`\n\n"
            f"<p class=\"fsx-source-meta\">{n} lines · the repository's file, as of this build</p>\n\n"
            f"{body}\n")


def _dir_page(root: str, repo_path: str, pages: set[str]) -> str:
    rows = []
    for name in sorted(os.listdir(os.path.join(root, repo_path))):
        child = f"{repo_path}/{name}"
        if child in pages:
            is_dir = os.path.isdir(os.path.join(root, child))
            rows.append(f"- [`{name}{'/' if is_dir else ''}`]({name}{'/index.md' if is_dir else '.md'})")
        elif not name.startswith((".", "__pycache__")):
            rows.append(f"- `{name}`")
    return (f"---\nsearch:\n  exclude: true\n---\n\n# `{repo_path}/`\n\n" + "\n".join(rows) + "\n")


def on_files(files, config):
    root = _repo_root(config)
    wanted = _linked_repo_paths(config)
    pages: set[str] = set()
    for path in sorted(wanted):
        full = os.path.join(root, path)
        if os.path.isdir(full):
            pages.add(path)
            # A linked directory lists its files; its readable files become pages too.
            for name in os.listdir(full):
                child = os.path.join(full, name)
                if os.path.isfile(child) and os.path.splitext(name)[1] in TEXT_SUFFIXES:
                    pages.add(f"{path}/{name}")
        elif os.path.splitext(path)[1] in TEXT_SUFFIXES and os.path.getsize(full) <= MAX_SOURCE_BYTES:
            pages.add(path)
    for path in sorted(pages):
        full = os.path.join(root, path)
        if os.path.isdir(full):
            content = _dir_page(root, path, pages)
        else:
            with open(full, encoding="utf-8", errors="replace") as f:
                content = _source_page(path, f.read())
        files.append(File.generated(config, code_page_uri(path, os.path.isdir(full)), content=content,
                                    inclusion=InclusionLevel.NOT_IN_NAV))
    config["fsx_code_pages"] = pages
    return files


def _rewrite_links(markdown: str, page, config) -> str:
    root, pages = _repo_root(config), config.get("fsx_code_pages", set())
    src_uri = page.file.src_uri
    depth = src_uri.count("/")

    def rewrite(target: str) -> str:
        hit = repo_target(src_uri, target)
        if hit is None or src_uri.startswith(CODE_PREFIX):
            return target
        path, anchor = hit
        path = path.rstrip("/")
        full = os.path.join(root, path)
        if not os.path.exists(full):
            log.warning(f"Doc file '{src_uri}' links to '{target}', which is not in the repository.")
            return target
        if anchor and not LINE_ANCHOR.match(anchor) and path.endswith(".py") and os.path.isfile(full):
            lines = python_symbol_lines(full, anchor)
            if lines is None:
                log.warning(f"Doc file '{src_uri}' links to '{target}', but '{path}' defines no '{anchor}'.")
            else:
                anchor = f"L{lines[0]}-L{lines[1]}"
        if anchor and LINE_ANCHOR.match(anchor) and os.path.isfile(full):
            with open(full, encoding="utf-8", errors="replace") as f:
                n_lines = sum(1 for _ in f)
            last = max(int(x) for x in LINE_ANCHOR.match(anchor).groups() if x)
            if last > n_lines:
                log.warning(f"Doc file '{src_uri}' links to '{target}', but '{path}' has {n_lines} lines.")
        if path not in pages:   # binary or huge: leave the link as it is (it still works on GitHub)
            log.warning(f"Doc file '{src_uri}' links to '{target}', which the site cannot show.")
            return target
        uri = code_page_uri(path, os.path.isdir(full))
        return "../" * depth + uri + (f"#{anchor}" if anchor else "")

    out = []
    for is_code, chunk in _split_fences(markdown):
        if not is_code:
            chunk = _outside_inline_code(chunk, lambda t: INLINE_LINK.sub(
                lambda m: f"{m.group(1)}{rewrite(m.group('target'))}{m.group('title') or ''})", t))
            chunk = REFERENCE_LINK.sub(lambda m: m.group("lead") + rewrite(m.group("target")), chunk)
        out.append(chunk)
    return "".join(out)


def on_page_markdown(markdown, page, config, files):
    return _rewrite_links(markdown, page, config)


# ---------------------------------------------------------------------------------------------
# 2. Formulas → MathML
# ---------------------------------------------------------------------------------------------

ARITHMATEX = re.compile(r'<(?P<tag>span|div) class="arithmatex">(?P<tex>.*?)</(?P=tag)>', re.S)


def _mathml(m: re.Match) -> str:
    from latex2mathml.converter import convert

    tex = html.unescape(m.group("tex")).strip()
    block = m.group("tag") == "div"
    for opener, closer in ((r"\[", r"\]"), (r"\(", r"\)"), ("$$", "$$"), ("$", "$")):
        if tex.startswith(opener) and tex.endswith(closer):
            tex = tex[len(opener):len(tex) - len(closer)]
            break
    mathml = convert(tex.strip(), display="block" if block else "inline")
    return f'<div class="fsx-math">{mathml}</div>' if block else mathml


class _LineAnchors(set):
    """A source page's anchors: #L12 exists per line; #L12-L40 exists when both its ends do."""

    def __contains__(self, anchor) -> bool:
        m = LINE_ANCHOR.match(anchor) if isinstance(anchor, str) else None
        if m and m.group(2):
            return super().__contains__(f"L{m.group(1)}") and super().__contains__(f"L{m.group(2)}")
        return super().__contains__(anchor)


def on_page_content(html_text, page, config, files):
    if page.file.src_uri.startswith(CODE_PREFIX) and page.present_anchor_ids is not None:
        page.present_anchor_ids = _LineAnchors(page.present_anchor_ids)
    return ARITHMATEX.sub(_mathml, html_text)


# ---------------------------------------------------------------------------------------------
# 3. Pages not in nav → "More chapters"
# ---------------------------------------------------------------------------------------------

def unlisted_pages(nav, files) -> list:
    listed = {id(p) for p in nav.pages}
    return [f.page for f in files.documentation_pages()
            if f.page is not None and id(f.page) not in listed and not f.src_uri.startswith(CODE_PREFIX)]


def on_nav(nav, config, files):
    extra = unlisted_pages(nav, files)
    if extra:
        log.info("Not in mkdocs.yml's nav, listed under 'More chapters': "
                 + ", ".join(p.file.src_uri for p in extra))
        section = Section("More chapters", extra)
        for p in extra:
            p.parent = section
        nav.items.append(section)
        nav.pages.extend(extra)
    return nav
