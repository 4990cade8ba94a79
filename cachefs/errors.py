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


class ViewPermissionError(ViewLookupError):
    """The job's user may not read the path on the master (EACCES)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "the job's user may not read it on the master")


class ViewLateError(ViewLookupError):
    """A late lookup got no usable answer (the master away, a bad answer): EIO."""


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


class IncludeUnreadableError(ClosureError):
    """A directory named by (or under) an ``--include`` cannot be listed."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"include {path}: cannot list this directory ({problem}); make it readable"
            " to you or leave it out of --include"
        )


class InterpreterError(ClosureError):
    """A script's interpreter could not be asked which modules the script imports."""

    def __init__(self, interpreter: str, script: str, problem: str) -> None:
        self.interpreter = interpreter
        self.script = script
        self.problem = problem
        super().__init__(f"cannot list the modules of {script} with {interpreter}: {problem}")


class ScriptNotFoundError(ClosureError):
    """The script an interpreter is given on its command line (``python3 x.py``,
    ``perl x.pl``, ``sh x.sh``) is not a readable file."""

    def __init__(self, interpreter: str, script: str, problem: str) -> None:
        self.interpreter = interpreter
        self.script = script
        self.problem = problem
        super().__init__(
            f"{interpreter}: script {script}: {problem}; give the path of a readable file"
            " (a relative one is taken from the directory you submit from)"
        )


class EmptyCommandError(ClosureError):
    """An empty argument vector: no program to resolve."""

    def __init__(self) -> None:
        super().__init__("no program given: name the program to run")


# --- cache (the node cache) ---------------------------------------------------------


class CacheRequestError(CachefsError):
    """A node-cache call got a bad argument (``.value``): a digest that is not
    sha256 hex, a negative size, an empty job name, a budget below 1 byte."""

    def __init__(self, problem: str, value: object) -> None:
        self.problem = problem
        self.value = value
        super().__init__(f"node cache: {problem}: {value!r}")


class CorruptObjectError(CachefsError):
    """Every copy of an object failed verification (sha256 or size), ``attempts`` times.

    ``source`` is the label of the source of the last bad copy; nothing was installed.
    """

    def __init__(self, sha256: str, source: str, attempts: int, problem: str = "") -> None:
        self.sha256 = sha256
        self.source = source
        self.attempts = attempts
        self.problem = problem
        why = f" ({problem})" if problem else ""
        super().__init__(
            f"object {sha256}: {attempts} cop{'y' if attempts == 1 else 'ies'} failed "
            f"verification{why}, the last from {source}; the source's copy is damaged or "
            "the network path corrupts data: check the store, or give the fill another source"
        )


class ObjectUnavailableError(CachefsError):
    """No source has these objects (``missing``, sha256 digests); ``sources`` are labels."""

    def __init__(self, missing: list[str], sources: list[str]) -> None:
        self.missing = missing
        self.sources = sources
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        asked = ", ".join(sources) if sources else "no source given"
        super().__init__(
            f"{len(missing)} object(s) found in no source ({asked}): {shown}; "
            "the master's store lost them (garbage collected?): resubmit the job"
        )


class CacheFullError(CachefsError):
    """A fill cannot fit beside what is pinned: ``needed`` + ``pinned`` > ``budget`` (bytes).

    ``needed`` is what the fill wants that is not pinned already; ``pinned`` what
    running jobs (and fills in progress) hold. Raised before anything is downloaded.
    """

    def __init__(self, needed: int, budget: int, pinned: int) -> None:
        self.needed = needed
        self.budget = budget
        self.pinned = pinned
        super().__init__(
            f"node cache full: the fill needs {needed} bytes beside {pinned} bytes pinned by "
            f"jobs, over the budget of {budget} bytes; wait for jobs to finish (unpin) "
            "or raise the cache budget"
        )


class CacheDiskFullError(CachefsError):
    """The cache's directory ran out of space (ENOSPC/EDQUOT) writing ``needed`` bytes.

    The partial file is removed and nothing is recorded; the cache stays usable.
    """

    def __init__(self, path: str, needed: int) -> None:
        self.path = path
        self.needed = needed
        super().__init__(
            f"no space left in {path} writing {needed} bytes; free space there, or set "
            "the cache budget below the free size of its directory"
        )


class ObjectNotCachedError(CachefsError):
    """The node cache at ``root`` has no object ``sha256``."""

    def __init__(self, sha256: str, root: str) -> None:
        self.sha256 = sha256
        self.root = root
        super().__init__(f"object {sha256} is not in the node cache at {root}; fill it first")


class CacheMetadataError(CachefsError):
    """The cache's pin file (``path``) is not what the cache writes; it is never
    half-written by a crash, so someone edited or replaced it."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"node cache metadata {path}: {problem}; restore it, or remove it to drop all pins"
        )


class CacheIOError(CachefsError):
    """A file operation of the node cache failed for a reason other than a full disk."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"node cache {path}: {problem}")


# --- store and service --------------------------------------------------------


class StoreError(CachefsError):
    """The master's object store refused or failed an operation."""


class BadDigestError(StoreError):
    """A string given as an object name is not 64 lowercase hex digits."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        super().__init__(f"{digest!r} is not a sha256 digest (64 lowercase hex digits)")


class ObjectMissingError(StoreError):
    """The store has no object with this digest."""

    def __init__(self, digest: str, root: str) -> None:
        self.digest = digest
        self.root = root
        super().__init__(f"object {digest} is not in the store at {root}")


class IngestError(StoreError):
    """A file could not be read into the store (missing, unreadable, not a regular file)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"cannot store {path}: {problem}")


class SourceChangedError(IngestError):
    """The file kept changing while it was read; nothing was recorded for it."""

    def __init__(self, path: str, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(
            path,
            f"it changed while being read, {attempts} time(s); "
            "wait until whatever writes it has finished, then snapshot again",
        )


class DigestMismatchError(IngestError):
    """The file's content does not have the sha256 the caller expected."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(path, f"its sha256 is {actual}, not the expected {expected}")


class SnapshotError(CachefsError):
    """A closure path cannot be recorded in a manifest (vanished, a device, a fifo...)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"cannot snapshot {path}: {problem}")


class SourceUnreachableError(SourceError):
    """The object service could not be connected to, or the connection broke."""


class SourceAuthError(SourceError):
    """The object service refused the token (HTTP 401)."""


class SourceProtocolError(SourceError):
    """The object service answered outside the wire protocol (bad frame, short body)."""


class ServiceConfigError(CachefsError):
    """The object service cannot run as configured (an empty secret...)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"object service: {problem}")


# --- peers (a node's cache served to other nodes) ------------------------------------


class GrowingFailedError(CachefsError):
    """A download a peer was streaming as it grew failed (bad copy, source lost)
    after ``offset`` bytes; the peer breaks its answer off so the receiver asks
    its next source."""

    def __init__(self, sha256: str, offset: int) -> None:
        self.sha256 = sha256
        self.offset = offset
        super().__init__(
            f"object {sha256}: the download being relayed failed after {offset} bytes; "
            "the receiver falls back to its next source"
        )


# --- HTTP servers (cachefs.httpguard) ------------------------------------------------


class RequestBodyError(CachefsError):
    """A request body a server refuses: ``status`` 400 (not JSON), 408 (too slow) or
    413 (over ``limit`` bytes); ``what`` names the body."""

    def __init__(self, what: str, problem: str, status: int, limit: int | None = None) -> None:
        self.what = what
        self.problem = problem
        self.status = status
        self.limit = limit
        super().__init__(f"{what} {problem}")
