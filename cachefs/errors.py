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


# --- view (the job's environment root) ---------------------------------------------


class ViewLookupError(CachefsError):
    """A path asked of an environment root is not there or not of the kind asked.

    The FUSE adapter turns each subclass into one errno; nothing else does.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"environment root path {path!r}: {problem}")


class ViewNotFound(ViewLookupError):
    """No such path in the environment root (ENOENT at the FUSE boundary)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "not in the manifest")


class ViewNotADirectory(ViewLookupError):
    """A component of the path (``.component``) is a file or symlink (ENOTDIR)."""

    def __init__(self, path: str, component: str) -> None:
        self.component = component
        super().__init__(path, f"{component} is not a directory")


class ViewNotASymlink(ViewLookupError):
    """readlink of something that is not a symlink (EINVAL)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "not a symlink")


class ViewTreeError(CachefsError):
    """A manifest cannot be presented as a tree (an entry under a symlink, '/' not a
    directory): the closure that made it must resolve the symlink instead."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"cannot present manifest entry {path!r}: {problem}")


class ViewMountError(CachefsError):
    """Mounting or unmounting the FUSE view failed; ``.detail`` holds the server's
    stderr or the command's output."""

    def __init__(self, mountpoint: str, problem: str, detail: str = "") -> None:
        self.mountpoint = mountpoint
        self.problem = problem
        self.detail = detail
        tail = f": {detail.strip()}" if detail.strip() else ""
        super().__init__(f"environment root at {mountpoint}: {problem}{tail}")


class FarmError(CachefsError):
    """Building or removing a link farm failed (target not empty, a mount left
    inside it...)."""

    def __init__(self, target: str, problem: str) -> None:
        self.target = target
        self.problem = problem
        super().__init__(f"link farm {target}: {problem}")
