"""The learning site: `mkdocs build --strict`, then the built site in a real browser.

The build is the writers' own command (mkdocs.yml, hooks in tools/docs_site.py). The browser is
headless Chromium (Debian's package, which .ci/run installs) driven by Playwright: every page must
render with no console error and no failed request, every internal link and image must resolve,
and the search box must find "KV cache". Budget: ~25 s (one build ~6 s, the browser ~15 s).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, NO_MKDOCS_2_WARNING="1")   # Material's banner about MkDocs 2, not a warning of ours


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = mkdocs_build(ROOT / "mkdocs.yml", out)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_site_builds_strict(site):
    for page in ("index.html", "before-you-start/index.html", "map/index.html", "further-reading/index.html"):
        assert (site / page).is_file(), page
    # The journey on the map links each step to its code, shown as a page of the site.
    assert re.search(r'href="[^"]*code/fs_mlx/[^"]*#L\d+-L\d+"', (site / "map/index.html").read_text())


def test_site_needs_no_network(site):
    """Offline: no web fonts, no CDN — nothing in a page is fetched from another host."""
    remote = re.compile(r'<(?:script|link|img|iframe|source)\b[^>]*?(?:src|href)="(?:https?:)?//[^"]+"', re.I)
    for page in (p for p in site.rglob("*.html") if p.is_file()):   # code/…/chat.html/ is a folder
        text = page.read_text(encoding="utf-8")
        hits = [m.group(0) for m in remote.finditer(text) if 'rel="canonical"' not in m.group(0)]
        assert not hits, f"{page.relative_to(site)} fetches {hits[0]}"
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, page


def nav_pages() -> set[str]:
    from mkdocs.config import load_config

    config = load_config(str(ROOT / "mkdocs.yml"))
    listed: set[str] = set()

    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                walk(value)
            elif isinstance(value, str) and not value.startswith(("http://", "https://")):
                listed.add(value)
    walk(config["nav"])
    return listed


def test_every_page_is_in_nav():
    """A new chapter builds anyway (under "More chapters"), but belongs in the nav."""
    listed = nav_pages()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    missing = sorted(pages - listed)
    assert not missing, (f"{', '.join('docs/' + m for m in missing)} not in mkdocs.yml's nav: add a line like "
                         f"`      - Your chapter: {missing[0]}` under Chapters (and to the list in docs/README.md)")
    assert not listed - pages, f"mkdocs.yml's nav lists pages that do not exist: {sorted(listed - pages)}"


def _mini_project(tmp: Path, pages: dict[str, str]) -> Path:
    """A copy of the site's configuration around a few pages and a small 'repository'."""
    (tmp / "docs").mkdir()
    (tmp / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "docs_site.py", tmp / "tools")
    shutil.copytree(ROOT / "docs" / "assets", tmp / "docs" / "assets")
    (tmp / "pkg").mkdir()
    (tmp / "pkg" / "mod.py").write_text("X = 1\n\n\nclass Cache:\n    def trim(self, n):\n        return n\n")
    config = (ROOT / "mkdocs.yml").read_text()
    config = re.sub(r"\nnav:\n(?:  .*\n)+", "\nnav:\n  - Home: README.md\n", config)
    (tmp / "mkdocs.yml").write_text(config)
    for name, text in pages.items():
        (tmp / "docs" / name).write_text(text)
    return tmp / "mkdocs.yml"


def test_a_page_missing_from_nav_still_builds(tmp_path):
    """…under "More chapters"; and a link to a Python name becomes that name's line range."""
    config = _mini_project(tmp_path, {"README.md": "# Home\n\nSee [new](new.md), [trim](../pkg/mod.py#Cache.trim).\n",
                                      "new.md": "# A new chapter\n\nIt is $x^2$.\n"})
    done = mkdocs_build(config, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    home = (tmp_path / "site" / "index.html").read_text()
    assert "More chapters" in home and 'href="new/"' in home
    assert "<math" in (tmp_path / "site" / "new" / "index.html").read_text()   # formulas became MathML
    assert 'href="code/pkg/mod.py/#L5-L6"' in home
    source = (tmp_path / "site" / "code" / "pkg" / "mod.py" / "index.html").read_text()
    assert 'id="L5"' in source and 'id="L6"' in source


def test_dead_code_links_fail_the_build(tmp_path):
    links = {"../pkg/gone.py": "which is not in the repository",
             "../pkg/mod.py#Cache.clear": "defines no 'Cache.clear'",
             "../pkg/mod.py#L5-L99": "has 6 lines"}
    config = _mini_project(tmp_path, {"README.md": "# Home\n\n" + "\n\n".join(f"[code]({l})" for l in links)})
    done = mkdocs_build(config, tmp_path / "site")
    assert done.returncode != 0
    for link, complaint in links.items():
        assert complaint in done.stderr, (link, done.stderr)


# ---------------------------------------------------------------------------------------------
# Every internal link and image resolves (all pages, source pages included: a static check)
# ---------------------------------------------------------------------------------------------

class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) and tag in ("a", "img", "link", "script", "source", "image", "use"):
                self.refs.append((tag, a[key]))


def _parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _target(site: Path, page: Path, ref: str) -> tuple[Path, str] | None:
    url = urlparse(ref)
    if url.scheme or url.netloc or ref.startswith(("mailto:", "data:", "javascript:")):
        return None
    base = "/" + page.relative_to(site).as_posix()
    path = unquote(urlparse(urljoin(base, url.path)).path) if url.path else base
    target = site / path.lstrip("/")
    if target.is_dir() or path.endswith("/"):
        target = target / "index.html"
    return target, url.fragment


def test_every_internal_link_and_image_resolves(site):
    parsed: dict[Path, _Refs] = {}

    def parse(path: Path) -> _Refs:
        if path not in parsed:
            parsed[path] = _parse(path)
        return parsed[path]

    broken = []
    for page in sorted(p for p in site.rglob("*.html") if p.is_file()):
        refs = parse(page)
        for tag, ref in refs.refs:
            hit = _target(site, page, ref)
            if hit is None:
                continue
            target, fragment = hit
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: <{tag}> {ref} → no such file")
            elif fragment and target.suffix == ".html":
                ids = parse(target).ids
                m = re.fullmatch(r"L(\d+)-L(\d+)", fragment)
                ok = {f"L{m.group(1)}", f"L{m.group(2)}"} <= ids if m else fragment in ids
                if not ok:
                    broken.append(f"{page.relative_to(site)}: {ref} → no anchor #{fragment}")
    assert not broken, "\n".join(broken[:20])


# ---------------------------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_path() -> str:
    for candidate in (os.environ.get("FSX_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.fail("no Chromium: .ci/run installs Debian's (`apt-get install chromium`); "
                "elsewhere set FSX_CHROMIUM to a Chrome or Chromium binary")


@pytest.fixture(scope="module")
def served(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()


def doc_pages(site: Path) -> list[str]:
    """The chapters and start pages (source pages are checked statically above)."""
    return sorted(p.parent.relative_to(site).as_posix() + "/" if p.parent != site else ""
                  for p in site.rglob("index.html") if "code" not in p.relative_to(site).parts)


def test_every_page_renders_without_errors(site, served, browser):
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"{page.url}: console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))
    # ERR_ABORTED: a request still in flight (the search index) when the test moves to the next page
    page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "")
            and problems.append(f"{page.url}: failed to load {r.url}: {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{page.url}: {r.status} {r.url}"))
    pages = doc_pages(site)
    assert len(pages) >= 15, pages
    for path in pages:
        page.goto(served + path, wait_until="load")
        assert page.locator("article h1").count() >= 1, f"{path}: no title rendered"
        # every image is decoded, not a broken-image icon
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                               ".map(i => i.getAttribute('src'))")
        assert not broken, f"{path}: images that did not load: {broken}"
    # a formula is laid out by the browser (MathML), not left as TeX
    page.goto(served + "before-you-start/", wait_until="load")
    assert page.locator("math").count() > 5
    assert "\\frac" not in page.locator("article").inner_text()
    # a source page highlights the linked line range
    page.goto(served + "map/", wait_until="load")
    href = page.locator("a[href*='code/'][href*='#L']").first.get_attribute("href")
    page.goto(urljoin(served + "map/", href), wait_until="load")
    first = re.search(r"#L(\d+)", href).group(1)
    assert "fsx-hl" in (page.locator(f"#L{first}").get_attribute("class") or "")
    page.close()
    assert not problems, "\n".join(problems[:20])


def test_search_finds_the_kv_cache(served, browser):
    page = browser.new_page()
    page.goto(served, wait_until="load")
    page.locator("input.md-search__input").click()
    page.keyboard.type("KV cache")        # typed, as a reader does: Material searches on key events
    page.locator(".md-search-result__item").first.wait_for(timeout=60_000)   # a busy CI machine builds the index slowly
    titles = " ".join(page.locator(".md-search-result__item").all_inner_texts())
    assert "KV cache" in titles
    assert page.locator(".md-search-result__link[href*='kv-cache']").count() >= 1
    page.close()


def test_screenshots_of_the_landing_page_and_the_map(served, browser, tmp_path):
    """Kept for the closing note when FSX_DOCS_SCREENSHOTS names a folder; checked for size here."""
    out = Path(os.environ.get("FSX_DOCS_SCREENSHOTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    for path, name in (("", "landing.png"), ("map/", "map.png")):
        page.goto(served + path, wait_until="load")
        page.screenshot(path=str(out / name), full_page=(name == "map.png"))
        assert (out / name).stat().st_size > 20_000, f"{name}: a blank page?"
    page.close()
