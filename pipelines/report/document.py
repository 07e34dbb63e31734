"""A report as a list of blocks, rendered twice: one self-contained HTML page (images as data
URIs, the style inline, no script, nothing fetched) and Markdown with the images beside it. The
content is written once, in pipelines.report.sections; these renderers only lay it out."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

SHORT_CELL = 16  # characters
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1180px; margin: 0 auto; padding: 1em 1.5em;
       color: #111; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #999; }
h3 { font-size: 1.05em; margin-top: 1.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.82em; max-width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.45em; text-align: right;
         overflow-wrap: break-word; }
td.short { white-space: nowrap; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: bottom; text-align: left; font-size: 0.9em; color: #333; padding: 0.3em 0; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #333; }
pre { background: #f4f4f4; padding: 0.7em; white-space: pre-wrap; overflow-wrap: anywhere;
      font-size: 0.85em; }
code { overflow-wrap: anywhere; }
.alert { border: 3px solid #b00000; color: #b00000; background: #fff0f0; padding: 0.6em 0.9em;
         font-weight: bold; }
.ok { border: 2px solid #1a6b1a; color: #1a6b1a; padding: 0.5em 0.9em; }
.note { color: #333; font-size: 0.92em; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.grid figure { flex: 1 1 520px; max-width: 100%; }
"""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = "plain"  # plain | alert (red, at the top) | ok | note


@dataclass(frozen=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    id: str = ""
    caption: str = ""


@dataclass(frozen=True)
class Image:
    name: str  # file name beside report.md (report-figures/<name>)
    png: bytes = field(repr=False)
    caption: str


@dataclass(frozen=True)
class Figures:
    """Images side by side where the page is wide enough."""

    images: tuple[Image, ...]


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""


Block = Heading | Paragraph | Items | Table | Image | Figures | Code


def images(blocks: list[Block]) -> list[Image]:
    found: list[Image] = []
    for block in blocks:
        if isinstance(block, Image):
            found.append(block)
        elif isinstance(block, Figures):
            found.extend(block.images)
    return found


# ---- HTML ------------------------------------------------------------------------------------


def _html_image(image: Image) -> str:
    data = base64.b64encode(image.png).decode()
    alt = html.escape(image.caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


def _html_cell(text: str) -> str:
    """A short cell (a number, an ε, "1e-05") never breaks; a long one wraps at spaces."""
    short = ' class="short"' if len(text) <= SHORT_CELL else ""
    return f"<td{short}>{html.escape(text)}</td>"


def _html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{e(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        css = f' class="{block.kind}"' if block.kind != "plain" else ""
        return f"<p{css}>{e(block.text)}</p>"
    if isinstance(block, Items):
        return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        ident = f' id="{e(block.id)}"' if block.id else ""
        head = "".join(f"<th>{e(c)}</th>" for c in block.columns)
        body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in block.rows)
        caption = f"<caption>{e(block.caption)}</caption>" if block.caption else ""
        return f"<table{ident}>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Image):
        return _html_image(block)
    if isinstance(block, Figures):
        return '<div class="grid">' + "".join(_html_image(i) for i in block.images) + "</div>"
    return f"<pre><code>{e(block.text)}</code></pre>"


def to_html(title: str, blocks: list[Block]) -> str:
    body = "\n".join(_html_block(b) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


# ---- Markdown --------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_image(image: Image, folder: str) -> str:
    return f"![{image.caption}]({folder}/{image.name})\n\n*{image.caption}*"


def _md_block(block: Block, folder: str) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return f"> **{block.text}**" if block.kind == "alert" else block.text
    if isinstance(block, Items):
        return "\n".join(f"- {i}" for i in block.items)
    if isinstance(block, Table):
        lines = [
            "| " + " | ".join(_md_cell(c) for c in block.columns) + " |",
            "|" + "|".join("---" for _ in block.columns) + "|",
            *("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows),
        ]
        return "\n".join(lines) + (f"\n\n{block.caption}" if block.caption else "")
    if isinstance(block, Image):
        return _md_image(block, folder)
    if isinstance(block, Figures):
        return "\n\n".join(_md_image(i, folder) for i in block.images)
    fence = "````" if "```" in block.text else "```"
    return f"{fence}{block.language}\n{block.text.rstrip()}\n{fence}"


def to_markdown(blocks: list[Block], *, folder: str) -> str:
    return "\n\n".join(_md_block(b, folder) for b in blocks) + "\n"
