"""The report's HTML: one file, nothing fetched when it is opened.

CSS is inline in a ``<style>`` element, images are ``data:image/png;base64``
URIs, there is no script and no link: the page reads the same on a laptop on
a train as on the site's intranet. Every value is escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

_CSS = """
body { font: 14px/1.4 sans-serif; margin: 2em auto; max-width: 960px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
p.meta, p.note { color: #555; margin: 0.2em 0; }
img { display: block; max-width: 100%; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 0.9em; margin-top: 0.5em; }
th, td { padding: 0.15em 0.8em; border-bottom: 1px solid #e4e4e4; }
th { text-align: left; background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
p.empty { font-size: 1.2em; margin-top: 2em; }
"""


@dataclass(frozen=True)
class Section:
    """One plot, what it shows, and the numbers behind it."""

    title: str
    note: str
    png: bytes | None
    columns: Sequence[str] = ()
    rows: Sequence[Sequence[object]] = field(default_factory=list)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cell(value: object) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    shown = f"{value:,}" if isinstance(value, int) and numeric else str(value)
    return (
        f'<td class="n">{html.escape(shown)}</td>' if numeric else f"<td>{html.escape(shown)}</td>"
    )


def _section(s: Section) -> str:
    out = [f"<h2>{html.escape(s.title)}</h2>", f'<p class="note">{html.escape(s.note)}</p>']
    if s.png is not None:
        out.append(f'<img alt="{html.escape(s.title)}" src="{data_uri(s.png)}">')
    if s.columns and s.rows:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in s.columns)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in s.rows)
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(out)


def render(title: str, meta: Sequence[str], sections: Sequence[Section], empty: str) -> str:
    """The whole page: ``meta`` lines under the title, then each section; with no
    sections, ``empty`` says why there is nothing to show."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<p class="meta">{html.escape(line)}</p>' for line in meta),
    ]
    if sections:
        parts += [_section(s) for s in sections]
    else:
        parts.append(f'<p class="empty">{html.escape(empty)}</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)
