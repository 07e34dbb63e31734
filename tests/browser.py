"""Helpers of the browser tests: render an HTML file in headless Chromium and report what a reader
would see go wrong (an image that did not load, a request that left the machine, a table with the
wrong number of rows, an element wider than the page), and save a full-page screenshot.

The browser is Debian's `chromium` (`.ci/run` installs it when it is missing), driven by
Playwright's Python package with `executable_path` set to it: `playwright install` cannot
download here, and nothing calls it. A test that needs the browser calls `require_browser()` (or
uses `launch_browser()`), which skips with one clear message where there is no browser or no
playwright package.

    @pytest.fixture(scope="module")
    def browser():
        with launch_browser() as b:  # skips the module's tests when there is no browser
            yield b

    check = render(path, screenshot=tmp_path / "page.png", rows_selector="table tbody tr",
                   browser=browser)
    assert check.problems() == []
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ENV_VAR = "PRIVCOMP_CHROMIUM"

SKIP_MESSAGE = (
    "no headless browser: install Debian's chromium (`apt-get install chromium`; `.ci/run` does "
    f"it when it can) or set {ENV_VAR} to a Chromium executable, and install the dev extra "
    "(`pip install -e '.[dev]'`, which brings playwright; `playwright install` is not needed)"
)

# A URL the page may load: a file next to it, or data embedded in it. Anything else is a
# network request, which a self-contained report must not make.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def find_chromium() -> str | None:
    """The Chromium executable to drive: $PRIVCOMP_CHROMIUM, else /usr/bin/chromium, else
    `chromium` or `chromium-browser` on PATH; None when there is none."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_browser() -> str:
    """The Chromium executable, or skip the calling test with SKIP_MESSAGE (no browser, or no
    playwright package)."""
    executable = find_chromium()
    if executable is None:
        configured = os.environ.get(ENV_VAR)
        where = (
            f"{ENV_VAR}={configured!r} is not executable"
            if configured
            else "no /usr/bin/chromium and no chromium or chromium-browser on PATH"
        )
        pytest.skip(f"{SKIP_MESSAGE} [{where}]")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip(f"{SKIP_MESSAGE} [playwright is not importable]")
    return executable


@contextmanager
def launch_browser() -> Iterator[Any]:
    """One headless Chromium (a playwright `Browser`) for as many `render` calls as the caller
    makes; skips (require_browser) when there is none."""
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable, args=["--no-sandbox"], headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass(frozen=True)
class PageCheck:
    """What rendering one HTML file showed. Every list is empty on a page that renders well."""

    url: str
    screenshot: Path
    # <img> elements that did not load (naturalWidth 0 after loading ended), by their src.
    broken_images: list[str] = field(default_factory=list)
    # Local (file:) requests that failed: a missing image, stylesheet or script, with the reason.
    failed_requests: list[str] = field(default_factory=list)
    # Every request whose URL is not file:, data:, blob: or about:. They are aborted before they
    # leave the machine and listed here (one the abort missed is marked NOT blocked): a
    # self-contained report makes none.
    network_requests: list[str] = field(default_factory=list)
    # The outermost elements whose right edge is more than 1 px past the page's width, described
    # as tag#id.class (right edge, width); plus the document itself when it scrolls sideways.
    overflowing: list[str] = field(default_factory=list)
    # Uncaught JavaScript errors.
    page_errors: list[str] = field(default_factory=list)
    # How many elements matched rows_selector; None when no selector was given.
    rows: int | None = None
    client_width: int = 0
    scroll_width: int = 0

    def problems(self) -> list[str]:
        """Every problem as one readable line; [] when the page rendered well."""
        return (
            [f"image did not load: {s}" for s in self.broken_images]
            + [f"request failed: {s}" for s in self.failed_requests]
            + [
                f"network request (a self-contained page makes none): {s}"
                for s in self.network_requests
            ]
            + [f"wider than the page ({self.client_width} px): {s}" for s in self.overflowing]
            + [f"JavaScript error: {s}" for s in self.page_errors]
        )


def _short(url: str, limit: int = 160) -> str:
    """url, its middle elided past limit characters (a data: URI can be megabytes long); the end,
    which names the file, is kept."""
    if len(url) <= limit:
        return url
    keep = (limit - 1) // 2
    return url[:keep] + "…" + url[-keep:]


# Waits for every <img> to finish (lazy ones are made eager first), then lists those that have
# no pixels.
_BROKEN_IMAGES_JS = """
async () => {
  const imgs = Array.from(document.images);
  for (const img of imgs) img.loading = "eager";
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener("load", done, {once: true});
    img.addEventListener("error", done, {once: true});
    setTimeout(done, 5000);
  })));
  return imgs.filter(img => !img.complete || img.naturalWidth === 0)
             .map(img => img.currentSrc || img.getAttribute("src") || "(no src)");
}
"""

# The outermost elements past the right edge of the page. An element inside a box that scrolls
# sideways (overflow-x auto or scroll) is reachable and not counted; one clipped by
# overflow: hidden is (its content is lost to the reader).
_OVERFLOW_JS = """
() => {
  const root = document.documentElement;
  const limit = root.clientWidth + 1;
  const past = el => el.getBoundingClientRect().right > limit;
  const inScrollBox = el => {
    for (let a = el.parentElement; a && a !== document.body && a !== root; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX;
      if (o === "auto" || o === "scroll") return true;
    }
    return false;
  };
  const describe = el => {
    const r = el.getBoundingClientRect();
    let name = el.tagName.toLowerCase();
    if (el.id) name += "#" + el.id;
    for (const c of el.classList) name += "." + c;
    return `${name} (right edge ${Math.round(r.right)} px, width ${Math.round(r.width)} px)`;
  };
  const found = [];
  for (const el of document.body ? document.body.querySelectorAll("*") : []) {
    if (!past(el) || inScrollBox(el)) continue;
    const parent = el.parentElement;
    if (parent && parent !== document.body && past(parent) && !inScrollBox(parent)) continue;
    found.push(describe(el));
  }
  if (document.body && past(document.body)) found.unshift(describe(document.body));
  return {found, client: root.clientWidth, scroll: root.scrollWidth};
}
"""


def render(
    html_path: Path,
    *,
    screenshot: Path,
    rows_selector: str | None = None,
    width: int = 1280,
    height: int = 800,
    browser: Any = None,
) -> PageCheck:
    """Open html_path (as a file:// URL) in headless Chromium at width × height CSS px, wait for
    it to load, check it (PageCheck) and save a full-page PNG screenshot to `screenshot`.

    browser: a playwright Browser from launch_browser(), shared by the caller's tests; without
    one, a browser is launched for this call (and skips when there is none)."""
    if browser is None:
        with launch_browser() as own:
            return render(
                html_path,
                screenshot=screenshot,
                rows_selector=rows_selector,
                width=width,
                height=height,
                browser=own,
            )

    url = Path(html_path).resolve().as_uri()
    network: list[str] = []
    failed: list[str] = []
    errors: list[str] = []

    context = browser.new_context(
        viewport={"width": width, "height": height}, service_workers="block"
    )
    try:
        blocked: set[str] = set()

        def guard(route: Any) -> None:
            request_url = route.request.url
            if request_url.startswith(LOCAL_SCHEMES):
                route.continue_()
            else:
                blocked.add(request_url)
                route.abort("blockedbyclient")

        def on_request(request: Any) -> None:
            if not request.url.startswith(LOCAL_SCHEMES):
                network.append(request.url)

        def on_failed(request: Any) -> None:
            if request.url.startswith(LOCAL_SCHEMES):
                failed.append(f"{_short(request.url)} ({request.failure})")

        context.route("**/*", guard)
        page = context.new_page()
        page.on("request", on_request)
        page.on("requestfailed", on_failed)
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(url, wait_until="load", timeout=30_000)
        broken = [_short(s) for s in page.evaluate(_BROKEN_IMAGES_JS)]
        rows = page.locator(rows_selector).count() if rows_selector is not None else None
        overflow = page.evaluate(_OVERFLOW_JS)
        found = list(overflow["found"])
        if overflow["scroll"] > overflow["client"]:
            found.append(
                f"the document scrolls sideways (scrollWidth {overflow['scroll']} px > "
                f"clientWidth {overflow['client']} px)"
            )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        # The request event fires before the route guard runs, so this is read at the end: a
        # request the guard never saw went out for real.
        network = [
            _short(u) + ("" if u in blocked else " (NOT blocked: it left the machine)")
            for u in network
        ]
    finally:
        context.close()

    return PageCheck(
        url=url,
        screenshot=screenshot,
        broken_images=broken,
        failed_requests=failed,
        network_requests=network,
        overflowing=found,
        page_errors=errors,
        rows=rows,
        client_width=int(overflow["client"]),
        scroll_width=int(overflow["scroll"]),
    )
