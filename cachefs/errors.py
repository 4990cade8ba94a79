"""Errors raised by cachefs.

One base, :class:`CachefsError`; subclasses carry the bad input as attributes
(``.path``, ``.digest``...). Each part of cachefs adds its own subclasses below
its heading; callers (the launcher's CLI) map them to messages in one place.
"""

from __future__ import annotations


class CachefsError(Exception):
    """Base of every error cachefs raises."""


# --- manifest -----------------------------------------------------------------


class ManifestError(CachefsError):
    """A manifest document is malformed or unsafe (a path escapes, a bad digest...)."""

    def __init__(self, problem: str, path: str | None = None) -> None:
        self.problem = problem
        self.path = path
        super().__init__(f"manifest entry {path!r}: {problem}" if path else f"manifest: {problem}")


# --- sources (transports) ---------------------------------------------------------


class SourceError(CachefsError):
    """An object source could not be reached or answered wrongly."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"object source {source}: {problem}")
