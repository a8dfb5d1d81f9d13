"""Open every page of the built book in a real, offline browser.

The built HTML (``_build/html``, or ``BOOK_HTML_DIR``) is served from 127.0.0.1; Debian's
chromium, driven by Playwright (no browser download), loads each page listed in ``_toc.yml``
with every request that leaves 127.0.0.1 blocked. Each page must load with HTTP 200, have
its equations typeset by the locally served MathJax, load every image, link only to internal
pages that exist, render its ipywidgets (where it has any) with the locally served HTML
manager, and log no console or page errors. A full-page screenshot of each page is saved
under ``_build/screenshots/`` (or ``BOOK_SCREENSHOT_DIR``) for review.

Run with ``make browser`` (after ``make book``), or directly:
``BOOK_HTML_DIR=_build/html .venv/bin/python -m pytest -q tests/browser``.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HTML_DIR = Path(os.environ.get("BOOK_HTML_DIR", REPO / "_build" / "html")).resolve()
SCREENSHOT_DIR = Path(os.environ.get("BOOK_SCREENSHOT_DIR", REPO / "_build" / "screenshots")).resolve()
TOC = REPO / "_toc.yml"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 30_000  # per wait; generous for a loaded 2-core CI machine
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def toc_pages(toc_path: Path = TOC) -> list[str]:
    """Every document in _toc.yml, in reading order, as paths without suffix (e.g. "book/intro")."""
    toc = yaml.safe_load(toc_path.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [str(Path(p).with_suffix("")) if Path(p).suffix in (".md", ".ipynb") else p for p in pages]


PAGES = toc_pages()

if not (HTML_DIR / "index.html").is_file():
    pytest.skip(f"no built book at {HTML_DIR} (run `make book` first, or set BOOK_HTML_DIR)",
                allow_module_level=True)
if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"chromium not found at {CHROMIUM!r} (`make browser` installs Debian's chromium)",
                allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output readable
        pass


@pytest.fixture(scope="module")
def server():
    """Base URL of a static file server for the built book on a free port of 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(HTML_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture()
def offline_page(browser):
    """A fresh page whose requests to anything but 127.0.0.1 are aborted and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    tab = SimpleNamespace(page=None, blocked=[], errors=[])

    def route(route):
        url = route.request.url
        if urllib.parse.urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            tab.blocked.append(url)
            route.abort()

    def on_console(msg):
        if msg.type == "error":
            where = msg.location or {}
            tab.errors.append(f"{msg.text} ({where.get('url', '')}:{where.get('lineNumber', '')})")

    context.route("**/*", route)
    tab.page = context.new_page()
    tab.page.set_default_timeout(TIMEOUT_MS)
    tab.page.on("console", on_console)
    tab.page.on("pageerror", lambda exc: tab.errors.append(f"page error: {exc}"))
    yield tab
    context.close()


def _wait_for(tab, doc: str, what: str, expression: str, arg=None) -> None:
    """page.wait_for_function, failing with what was awaited and what the page reported."""
    try:
        tab.page.wait_for_function(expression, arg=arg)
    except sync_api.TimeoutError:
        pytest.fail(f"{doc}: timed out waiting for {what}; blocked requests: {tab.blocked}; "
                    f"console errors: {tab.errors}")


_link_status: dict[str, int] = {}  # URL without fragment -> HTTP status, shared by all pages


def _status(url: str) -> int:
    if url not in _link_status:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                _link_status[url] = response.status
        except urllib.error.HTTPError as err:
            _link_status[url] = err.code
    return _link_status[url]


@pytest.mark.parametrize("doc", PAGES)
def test_page(doc, server, offline_page):
    page = offline_page.page
    url = urllib.parse.urljoin(server, f"{doc}.html")
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200, f"{doc}.html: HTTP {response and response.status}"

    # Equations: every math element holds a MathJax-rendered <mjx-container>, none with a TeX error.
    n_math = page.locator(".math").count()
    if n_math:
        _wait_for(offline_page, doc, "MathJax to load",
                  "() => window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("() => MathJax.startup.promise")
        untypeset = page.evaluate(
            "() => [...document.querySelectorAll('.math')]"
            ".filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80))")
        assert not untypeset, f"{doc}: {len(untypeset)} of {n_math} equations not typeset: {untypeset[:5]}"
        errors = page.evaluate(
            "() => [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error')"
            " || e.textContent)")
        assert not errors, f"{doc}: MathJax errors: {errors[:5]}"

    # Widgets: the HTML manager renders each saved view whose model is in the saved widget
    # state into a <div class="widget-subarea">; views of closed widgets have no model and stay empty.
    n_views = page.evaluate(f"""() => {{
        const ids = new Set();
        for (const s of document.querySelectorAll('script[type="{WIDGET_STATE}"]'))
            Object.keys(JSON.parse(s.textContent).state || {{}}).forEach(id => ids.add(id));
        return [...document.querySelectorAll('script[type="{WIDGET_VIEW}"]')]
            .filter(s => ids.has(JSON.parse(s.textContent).model_id)).length;
    }}""")
    if n_views:
        _wait_for(offline_page, doc, f"{n_views} widget views to render",
                  "n => document.querySelectorAll('.widget-subarea > .jupyter-widgets').length >= n", n_views)

    # Finished text: no MyST role or directive reaches the reader unrendered.
    text = page.locator("article").first.inner_text()
    raw = [m for m in ("{glue", "{cite", "{ref}", "{exercise}", "{solution}", "{figure}", ":label:") if m in text]
    assert not raw, f"{doc}: MyST markup shown raw: {raw}"

    # Chapter 7's visualizers need a kernel: the site shows each one's static stand-in instead, with the
    # note that it is live in Jupyter and Colab, and no dead controls.
    stand_ins = page.locator(".vq-snapshots")
    if doc == "notebooks/07_exploring_the_codebook":
        assert stand_ins.count() == 5, f"{doc}: {stand_ins.count()} static visualizers, expected 5"
        for k in range(5):
            shown = stand_ins.nth(k)
            assert "Live in Jupyter and Colab" in shown.inner_text() and shown.locator("img").count() >= 3
        assert page.locator(".widget-slider, .jupyter-widgets .widget-button").count() == 0, \
            f"{doc}: widget controls without a kernel"

    # Images: force lazy images to load, then every <img> must have decoded pixels.
    page.evaluate("""() => Promise.all([...document.images].map(img => {
        img.loading = 'eager';
        return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
    }))""")
    broken = page.evaluate(
        "() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
        ".map(i => i.currentSrc || i.src || i.outerHTML.slice(0, 80))")
    assert not broken, f"{doc}: images that did not load: {broken}"

    # Internal links: same-origin hrefs (fragment stripped) answer 200.
    hrefs = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    internal = {h.split("#", 1)[0] for h in hrefs if h.startswith(server)}
    dead = sorted(f"{h} ({_status(h)})" for h in internal if _status(h) != 200)
    assert not dead, f"{doc}: broken internal links: {dead}"

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / (doc.replace("/", "__") + ".png")), full_page=True)

    assert not offline_page.blocked, f"{doc}: requests leaving 127.0.0.1 (blocked): {offline_page.blocked}"
    assert not offline_page.errors, f"{doc}: console errors: {offline_page.errors}"
