"""The browser harness (tests/browser.py) on small hand-written pages: a good page passes, and each
fault a report could have (a broken image, a request off the machine, an element wider than the
page, a JavaScript error) is caught. One Chromium serves the whole module."""

from __future__ import annotations

import base64
import struct
import time
import zlib
from pathlib import Path

import pytest

from tests.browser import SKIP_MESSAGE, launch_browser, render, require_browser


@pytest.fixture(scope="module")
def browser():
    with launch_browser() as b:
        yield b


def png(width: int = 4, height: int = 3) -> bytes:
    """A valid opaque red RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def page(tmp_path: Path, body: str, name: str = "page.html") -> Path:
    path = tmp_path / name
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>t</title></head>"
        f"<body>{body}</body></html>",
        encoding="utf-8",
    )
    return path


def table(rows: int, columns: int = 3, cell_width: str = "auto") -> str:
    head = "".join(f"<th>c{j}</th>" for j in range(columns))
    cells = "".join(f"<td style='min-width:{cell_width}'>v</td>" for _ in range(columns))
    body = "".join(f"<tr>{cells}</tr>" for _ in range(rows))
    return f"<table id='artifacts'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


ROWS = "table#artifacts tbody tr"


def test_a_good_page_passes(browser, tmp_path: Path) -> None:
    (tmp_path / "local.png").write_bytes(png())
    data_uri = "data:image/png;base64," + base64.b64encode(png()).decode()
    # A table wider than the page inside a box that scrolls sideways is reachable: no overflow.
    wide_in_scroll_box = f"<div style='overflow-x:auto'>{table(1, 4, '600px')}</div>"
    html = page(
        tmp_path,
        f"<img src='{data_uri}' alt='embedded'><img src='local.png' alt='file'>"
        f"{table(3)}{wide_in_scroll_box.replace('artifacts', 'other')}",
    )
    shot = tmp_path / "shots" / "good.png"

    check = render(html, screenshot=shot, rows_selector=ROWS, browser=browser)

    assert check.problems() == []
    assert check.rows == 3  # the header row is not counted
    assert check.client_width <= 1280 and check.scroll_width == check.client_width
    image = shot.read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", image[16:24])  # the IHDR chunk
    assert width == 1280 and height >= 800  # the whole page at the viewport's width


def test_a_broken_image_is_caught(browser, tmp_path: Path) -> None:
    (tmp_path / "not-a-png.png").write_text("this is text")
    html = page(tmp_path, "<img src='missing.png'><img src='not-a-png.png'>")

    check = render(html, screenshot=tmp_path / "s.png", browser=browser)

    assert len(check.broken_images) == 2, check
    assert check.broken_images[0].endswith("/missing.png")
    assert check.broken_images[1].endswith("/not-a-png.png")
    assert any("missing.png" in f for f in check.failed_requests), check.failed_requests
    assert check.problems()


def test_an_element_wider_than_the_page_is_caught(browser, tmp_path: Path) -> None:
    html = page(
        tmp_path, "<p>fits</p><div id='wide' class='figure big' style='width:2000px'>x</div>"
    )

    check = render(html, screenshot=tmp_path / "s.png", browser=browser)

    assert check.overflowing[0].startswith("div#wide.figure.big (right edge 20"), check.overflowing
    assert "width 2000 px" in check.overflowing[0]
    assert any("scrolls sideways" in o for o in check.overflowing)
    assert check.scroll_width > check.client_width
    assert not check.broken_images and not check.network_requests


def test_a_wide_table_outside_a_scroll_box_is_caught(browser, tmp_path: Path) -> None:
    html = page(tmp_path, table(2, 4, "600px"))

    check = render(html, screenshot=tmp_path / "s.png", rows_selector=ROWS, browser=browser)

    assert check.rows == 2
    assert check.overflowing[0].startswith("table#artifacts"), check.overflowing


def test_clipped_content_counts_as_overflow(browser, tmp_path: Path) -> None:
    # overflow: hidden keeps the page from scrolling but hides the content: still a fault.
    html = page(
        tmp_path, "<div style='overflow:hidden'><div id='cut' style='width:3000px'>x</div></div>"
    )

    check = render(html, screenshot=tmp_path / "s.png", browser=browser)

    assert [o.split(" ")[0] for o in check.overflowing] == ["div#cut"]
    assert check.scroll_width == check.client_width


def test_network_requests_are_blocked_and_reported(browser, tmp_path: Path) -> None:
    html = page(
        tmp_path,
        "<link rel='stylesheet' href='https://cdn.example.com/style.css'>"
        "<img src='http://example.invalid/plot.png'>"
        "<script>fetch('https://example.com/beacon').catch(() => {})</script>",
    )

    start = time.monotonic()
    check = render(html, screenshot=tmp_path / "s.png", browser=browser)
    elapsed = time.monotonic() - start

    # Each is listed once, and without "NOT blocked": the route guard aborted it.
    assert sorted(check.network_requests) == [
        "http://example.invalid/plot.png",
        "https://cdn.example.com/style.css",
        "https://example.com/beacon",
    ]
    assert check.broken_images == ["http://example.invalid/plot.png"]  # aborted, so no pixels
    assert not check.failed_requests  # the aborted ones are reported once, as network requests
    assert elapsed < 10, f"a blocked request should fail at once, took {elapsed:.1f} s"


def test_a_javascript_error_is_caught(browser, tmp_path: Path) -> None:
    html = page(tmp_path, "<script>undefinedFunction()</script>")

    check = render(html, screenshot=tmp_path / "s.png", browser=browser)

    assert len(check.page_errors) == 1 and "undefinedFunction" in check.page_errors[0]


def test_no_browser_skips_with_the_install_hint(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRIVCOMP_CHROMIUM", str(tmp_path / "no-such-browser"))

    with pytest.raises(pytest.skip.Exception) as skipped:
        require_browser()

    assert SKIP_MESSAGE in str(skipped.value)
    assert "apt-get install chromium" in str(skipped.value)
    assert "is not executable" in str(skipped.value)
