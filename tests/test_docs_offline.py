"""The built docs work opened from disk (file://) with no network, search included.

The static checks read every built page: no script, stylesheet, image, frame or media is
loaded from another host (plain ``<a href>`` links to papers are fine), the search index
is inlined as a script (mkdocs-material's ``offline`` plugin) and the iframe-worker shim
that lets the search worker run from file:// is the vendored local copy, not unpkg.com.

Where Chromium is installed, it opens the pages from disk for real over the DevTools
protocol (``--remote-debugging-pipe``: no extra package): every request a page makes is
recorded and must stay on disk, and a query typed into the search box must find pages.
CI installs it (``.ci/run``); elsewhere those tests skip, saying why.
"""

from __future__ import annotations

import hashlib
import html.parser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "docs" / "assets" / "iframe-worker" / "shim.js"
LOCAL_SCHEMES = {"", "file", "data", "blob", "about"}
# Attributes through which a page loads something (an <a href> only links).
LOADING = {
    "script": ("src",), "link": ("href",), "img": ("src", "srcset"), "iframe": ("src",),
    "frame": ("src",), "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",),
    "track": ("src",), "embed": ("src",), "object": ("data",), "input": ("src",), "image": ("href",),
}


def is_remote(url: str) -> bool:
    """True for a URL that leaves the disk (``https://x``, ``//x``, ``http:x``)."""
    url = url.strip()
    return url.startswith("//") or urlsplit(url).scheme.lower() not in LOCAL_SCHEMES


class _Loads(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in LOADING.get(tag, ()) and value:
                urls = [part.split()[0] for part in value.split(",") if part.strip()] if name == "srcset" else [value]
                self.urls += [(tag, url) for url in urls]
            elif name == "style" and value:
                self.urls += [("style", url) for url in CSS_URL.findall(value)]


CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")


def loaded_urls(page_html: str) -> list[tuple[str, str]]:
    """``(tag, url)`` of everything a page loads by itself (links excluded)."""
    parser = _Loads()
    parser.feed(page_html)
    return parser.urls


def test_loaded_urls_tells_loads_from_links():
    page = ('<a href="https://arxiv.org/abs/1">paper</a><script src="https://unpkg.com/x"></script>'
            '<link rel="stylesheet" href="//fonts.example/css"><img srcset="a.png 1x, http://b/c.png 2x">'
            '<script src="../assets/x.js"></script><div style="background: url(https://e/x.png)"></div>')
    remote = [url for _, url in loaded_urls(page) if is_remote(url)]
    assert remote == ["https://unpkg.com/x", "//fonts.example/css", "http://b/c.png", "https://e/x.png"]


def test_vendored_shim_is_upstream_with_its_license():
    """The shim is iframe-worker's file unchanged (its sha256 is in the header) under its MIT notice."""
    text = SHIM.read_text(encoding="utf-8")
    header, sep, body = text.partition(" */\n")
    assert sep, "the shim has no license header"
    assert "Copyright (c) 2020-2022 Martin Donath" in header and "Permission is hereby granted" in header
    recorded = re.search(r"sha256 of the upstream file: ([0-9a-f]{64})", header)
    assert recorded and hashlib.sha256(body.encode()).hexdigest() == recorded.group(1)
    assert "window.Worker=" in body and not is_remote(SHIM.name)


def _hooks():
    spec = importlib.util.spec_from_file_location("zoo_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_display_math_is_cut_at_top_level_quads_only():
    split = _hooks().split_display
    tex = r"y = \left(\frac{a}{b}\quad c\right),\quad u = \lfloor p \rfloor,\ p \ge 1 \qquad z = \text{a \quad b}"
    assert split(tex) == [r"y = \left(\frac{a}{b}\quad c\right),", r"u = \lfloor p \rfloor,\ p \ge 1",
                          r"z = \text{a \quad b}"]
    assert split(r"\quadrant + x") == [r"\quadrant + x"]


# -- the built site -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "latex2mathml"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("offline-site")
    # ZOO_DOCS_QUICK: the catalog without harness runs (tests/test_docs.py builds the full one).
    env = dict(os.environ, ZOO_DOCS_QUICK="1", NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


def _pages(site: Path) -> list[Path]:
    """Every page a reader can reach; 404.html is only ever served by a web server (from
    disk nothing shows it) and uses root-absolute ``/assets/...`` paths for that reason."""
    pages = sorted(p for p in site.rglob("*.html") if p.relative_to(site) != Path("404.html"))
    assert len(pages) > 10, f"only {len(pages)} pages built"
    return pages


@pytest.mark.slow
def test_no_page_loads_anything_remote(site):
    for page in [*_pages(site), site / "404.html"]:
        urls = loaded_urls(page.read_text(encoding="utf-8"))
        remote = [f"<{tag}> {url}" for tag, url in urls if is_remote(url)]
        assert not remote, f"{page.relative_to(site)} loads from the network: {remote[:5]}"
        for tag, url in urls:  # and what it loads from disk is there
            if tag in ("script", "link", "img") and not urlsplit(url).scheme and page.name != "404.html":
                target = (page.parent / urlsplit(url).path).resolve()
                assert target.exists(), f"{page.relative_to(site)}: <{tag}> {url} is missing from the site"
    for css in site.rglob("*.css"):
        remote = [u for u in CSS_URL.findall(css.read_text(encoding="utf-8")) if is_remote(u)]
        assert not remote, f"{css.relative_to(site)} loads from the network: {remote[:5]}"


@pytest.mark.slow
def test_search_index_is_inlined_and_the_worker_shim_is_local(site):
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    script = site / "search" / "search_index.js"
    assert script.exists(), "no search/search_index.js: search cannot run from file:// (offline plugin off?)"
    inlined = script.read_text(encoding="utf-8")
    prefix = "var __index = "
    assert inlined.startswith(prefix), "the search index is not inlined (is the offline plugin on?)"
    assert json.loads(inlined[len(prefix):]) == index and len(index["docs"]) > 20
    for page in _pages(site):
        scripts = [url for tag, url in loaded_urls(page.read_text(encoding="utf-8")) if tag == "script"]
        shims = [url for url in scripts if "iframe-worker" in url]
        assert shims, f"{page.relative_to(site)}: no iframe-worker shim, search cannot run from file://"
        assert all((page.parent / url).resolve() == (site / "assets/iframe-worker/shim.js").resolve()
                   for url in shims), f"{page.relative_to(site)}: {shims}"
    assert (site / "assets" / "iframe-worker" / "shim.js").read_bytes() == SHIM.read_bytes()


@pytest.mark.slow
def test_page_defects_stay_fixed(site):
    """The catalog index keeps the navigation, docstring examples are code, wide math wraps."""
    catalog = (site / "catalog" / "index.html").read_text(encoding="utf-8")
    sidebar = re.search(r'<div class="md-sidebar md-sidebar--primary"[^>]*>', catalog)
    assert sidebar and "hidden" not in sidebar.group(0), "the catalog index hides the site navigation"
    for page in _pages(site):
        text = page.read_text(encoding="utf-8")
        literal = re.findall(r"\w::</p>", text)
        assert not literal, f"{page.relative_to(site)}: a reST '::' block rendered as prose: {literal}"
    config = (site / "reference" / "config.html").read_text(encoding="utf-8")
    example = config[config.index('id="zoo.config.AttentionConfig"'):config.index('id="zoo.config.VariantConfig"')]
    assert re.search(r'<div class="highlight"><pre>.*ModelConfig', example, re.S), "AttentionConfig's example is not code"
    for page in (site / "catalog").glob("*.html"):
        for block in re.findall(r'<div class="zoo-math".*?</div>', page.read_text(encoding="utf-8"), re.S):
            title = re.search(r'title="([^"]*)"', block).group(1)
            if "\\quad" in title:
                assert block.count("<math") >= 2, f"{page.name}: a wide equation is one unbreakable <math>"


# -- in a real browser ----------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


needs_chromium = pytest.mark.skipif(
    _chromium() is None, reason="Chromium is not installed (CI: apt-get install -y chromium)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _above_4(fd: int) -> int:
    """The same pipe end on a close-on-exec descriptor above 4 (3 and 4 are the child's)."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return high


class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (NUL-separated JSON on fds 3/4)."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="zoo-chromium-")
        to_child_r, self._to_child = (_above_4(fd) for fd in os.pipe())
        self._from_child, from_child_w = (_above_4(fd) for fd in os.pipe())

        def fds():  # the child reads commands on fd 3 and writes answers on fd 4 (inheritable)
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        # close_fds=False: 3 and 4 survive; every other fd of ours is close-on-exec anyway.
        self.proc = subprocess.Popen(
            [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
             "about:blank"], preexec_fn=fds, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer, self._id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def page(self, method: str, **params):
        return self.call(method, session=self.session, **params)

    def evaluate(self, expression: str):
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            self.evaluate("new Promise(r => setTimeout(r, 100))")
        return None

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may be gone already; kill below
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    b.page("Network.enable")
    b.page("Page.enable")
    b.page("Runtime.enable")
    yield b
    b.close()


def _open(browser: Browser, path: Path) -> None:
    browser.events.clear()
    url = path.as_uri()
    browser.page("Page.navigate", url=url)
    loaded = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
    assert browser.wait_for(loaded), f"{path} did not load"


@pytest.mark.slow
@needs_chromium
def test_chromium_loads_every_page_from_disk_only(site, browser):
    for page in _pages(site):
        _open(browser, page)
        assert browser.wait_for("!!document.querySelector('input.md-search__input')"), f"{page}: no search box"
        browser.evaluate("new Promise(r => setTimeout(r, 200))")  # late requests (the worker, images)
        requested = browser.requested_urls()
        assert any(url.startswith("file://") and "bundle" in url for url in requested), \
            f"{page.relative_to(site)}: requests are not being recorded: {requested[:5]}"
        remote = [url for url in requested if is_remote(url)]
        assert not remote, f"{page.relative_to(site)} requested over the network: {remote[:5]}"


@pytest.mark.slow
@needs_chromium
def test_chromium_search_finds_pages_offline(site, browser):
    _open(browser, site / "index.html")
    browser.evaluate("""(() => {
        const input = document.querySelector('input.md-search__input');
        input.focus(); input.value = 'mountains';
        input.dispatchEvent(new Event('input', {bubbles: true}));
        input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true, key: 's'}));
    })()""")
    meta = browser.wait_for(r"""(() => { const m = document.querySelector('.md-search-result__meta');
        return m && /\d+ matching/.test(m.textContent) ? m.textContent : null; })()""")
    assert meta, ("search found nothing from file://: " + str(browser.evaluate(
        "document.querySelector('.md-search-result__meta')?.textContent")))
    links = browser.evaluate("[...document.querySelectorAll('.md-search-result__link')].map(a => a.href)")
    assert any("worked-example" in link for link in links), links
    assert all(link.startswith("file://") for link in links), links
