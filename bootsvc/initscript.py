"""The ``/init`` scripts shipped with Beolaunch, each made whole from its shell fragments.

Stage 2 and stage 3 run different ``/init`` scripts (``stage2_init.sh``,
``stage3_init.sh``) that share some shell functions. Each shared function is
kept once, in its own file beside them (``cmdline_arg.sh``), and a script
names it on a line of its own, ``#@include cmdline_arg.sh``; :func:`shipped`
puts the fragment's text in that line's place. So each image still gets one
self-contained ``/init`` (what a node runs, and what ``init_sha256`` in an
image's ``built_from`` records), and building an image reads no more than it did.
"""

from __future__ import annotations

from pathlib import Path

#: A script line naming a fragment (a file in this directory) to put in its place.
INCLUDE = "#@include "


def shipped(name: str) -> str:
    """The script ``bootsvc/NAME`` with each ``#@include FRAGMENT`` line replaced
    by ``bootsvc/FRAGMENT``. Raises FileNotFoundError for a file missing from the
    install (package data: ``pyproject.toml``)."""
    here = Path(__file__).parent
    parts: list[str] = []
    for line in (here / name).read_text("utf-8").splitlines(keepends=True):
        if line.startswith(INCLUDE):
            parts.append((here / line.removeprefix(INCLUDE).strip()).read_text("utf-8"))
        else:
            parts.append(line)
    return "".join(parts)
