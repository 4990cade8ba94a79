"""What every report page must be: self-contained, its images real PNGs.

Shared by the CLI tests (root, in-process) and the integration test (a user,
through a real master)."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_PNG = "data:image/png;base64,"


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data"):
                self.refs.append((tag, name, value or ""))
                if tag == "img" and name == "src":
                    self.images.append(value or "")


def pngs(page: str) -> list[bytes]:
    """The decoded PNG of every ``<img>``, checked: each is a data: URI of a PNG
    that Pillow decodes, the page refers to nothing outside itself, and its
    CSS and markup load nothing (no url(), no @import, no script)."""
    refs = _Refs()
    refs.feed(page)
    outside = [r for r in refs.refs if not r[2].startswith(DATA_PNG)]
    assert outside == [], f"the page refers outside itself: {outside}"
    assert not re.search(r"url\(|@import|<script|<link", page, re.IGNORECASE)
    out = []
    for src in refs.images:
        data = base64.b64decode(src.removeprefix(DATA_PNG), validate=True)
        assert data.startswith(PNG_SIGNATURE), data[:16]
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"
            image.load()  # decodes every pixel: a truncated PNG fails here
            assert image.width > 100 and image.height > 100, image.size
        out.append(data)
    return out
