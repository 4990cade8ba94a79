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


# --- closure ----------------------------------------------------------------------


class ClosureError(CachefsError):
    """The closure of a program cannot be resolved."""


class ProgramNotFoundError(ClosureError):
    """The program is not an executable file, directly or in any ``PATH`` directory."""

    def __init__(self, program: str, searched: list[str]) -> None:
        self.program = program
        self.searched = searched
        where = ", ".join(searched) if searched else "(no PATH directory)"
        super().__init__(
            f"program {program!r} not found as an executable file (searched: {where}); "
            "give its absolute path or fix PATH"
        )


class MissingLibrariesError(ClosureError):
    """Libraries the loader would not find: every one, with who needed it.

    ``missing`` holds ``(soname, needed_by_path)`` pairs in discovery order.
    """

    def __init__(self, missing: list[tuple[str, str]]) -> None:
        self.missing = missing
        listed = "; ".join(f"{name} (needed by {who})" for name, who in missing)
        super().__init__(
            f"{len(missing)} missing librar{'y' if len(missing) == 1 else 'ies'}: {listed}; "
            "install them or point LD_LIBRARY_PATH or --include at them"
        )


class BadObjectError(ClosureError):
    """A file the loader or interpreter would use is unreadable or not loadable
    (truncated ELF, wrong type, unreadable script)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class IncludeNotFoundError(ClosureError):
    """An ``--include`` path or glob matches nothing."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        super().__init__(f"include {pattern!r} matches no file; check the path or glob")


class InterpreterError(ClosureError):
    """A script's interpreter could not be asked which modules the script imports."""

    def __init__(self, interpreter: str, script: str, problem: str) -> None:
        self.interpreter = interpreter
        self.script = script
        self.problem = problem
        super().__init__(f"cannot list the modules of {script} with {interpreter}: {problem}")
