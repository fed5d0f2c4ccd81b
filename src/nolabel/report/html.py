"""HTML building blocks of the reports: escaped text, tables, embedded images and the
page around them. Everything a page needs is inside it (styles inline, images as
base64 data URIs, no scripts), so it opens offline by double-click."""
from __future__ import annotations

import base64
import json
import math
from html import escape
from pathlib import Path
from typing import Iterable, Sequence

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       margin: 0 auto; max-width: 1150px; padding: 24px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px;
     border-bottom: 2px solid #d5dbe6; padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: #5b6578; margin: 0 0 12px; }
nav a { margin-right: 14px; color: #2457a6; text-decoration: none; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #d5dbe6; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef2f8; } tr:nth-child(even) td { background: #f8fafc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f4f6fa; border: 1px solid #d5dbe6; padding: 10px; overflow-x: auto; font-size: 12.5px; }
figure { margin: 10px 0 18px; } figure img { max-width: 100%; border: 1px solid #d5dbe6; }
figcaption { color: #5b6578; font-size: 13px; }
.blocks { display: flex; flex-wrap: wrap; gap: 0 22px; align-items: flex-start; }
.note { color: #8a5a00; background: #fff7e0; border: 1px solid #f0d890; padding: 6px 10px; }
"""


def esc(value) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return escape("" if value is None else str(value), quote=True)


def plain(value, exact: bool = False) -> str:
    """A value as a person reads it: None as "-", floats to 4 significant digits (all of them
    when ``exact``), lists and dicts as JSON."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) and not exact else str(value)
    return value if isinstance(value, str) else json.dumps(value, default=str)


def table(headers: Sequence[str] | None, rows: Iterable[Sequence], numeric: Sequence[int] = ()) -> str:
    """A table of escaped cells (no header row when ``headers`` is None); columns whose
    index is in ``numeric`` are right-aligned."""
    head = "" if headers is None else "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>\n" for row in rows)
    return f"<table>{head}<tbody>\n{body}</tbody></table>\n"


def pairs(items: Iterable[tuple[str, object]]) -> str:
    """A two-column table of names and values."""
    return table(None, items)


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>\n'


def image(data: bytes, mime: str, caption: str) -> str:
    """An image embedded as a data URI, with its caption."""
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>\n'


def image_file(path: Path, caption: str) -> str:
    """The image file ``path`` embedded (a note instead when it cannot be read)."""
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        return note(f"{caption}: {path.name} is not a PNG, JPEG or GIF image")
    try:
        return image(path.read_bytes(), mime, caption)
    except OSError as exc:
        return note(f"{caption}: {path} could not be read ({exc.strerror or exc})")


def side_by_side(parts: Sequence[str]) -> str:
    """Blocks laid out left to right, wrapping at the page width."""
    return '<div class="blocks">\n' + "".join(f"<div>{part}</div>\n" for part in parts) + "</div>\n"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n{body}</section>\n'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: a title, a table of contents and the ``(anchor, title, body)`` sections."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(section(*s) for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n"
            f'<p class="meta">{esc(subtitle)}</p>\n<nav>{nav}</nav>\n{body}</body>\n</html>\n')
