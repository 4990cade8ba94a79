"""The manifest: the exact file set a program needs, and its id.

A manifest maps absolute, normalised paths to a file (mode, size, sha256), a
symlink (target) or a directory (mode). Its canonical form is JSON with sorted
keys, no spaces, UTF-8, entries sorted by path; its id is the sha256 of those
bytes. ``root`` is the program the closure was made for; ``owner`` the uid that
submitted it (None for a closure not yet submitted), so the same closure
submitted by two users has two ids.

Every way in (:func:`loads`, :meth:`Manifest.from_document`, the constructor)
validates: a path that is relative, not normalised, holds NUL or ``..``, a
duplicate, or an entry under a file or a symlink is refused with ManifestError.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cachefs.errors import ManifestError

FORMAT_VERSION = 1
Kind = Literal["file", "symlink", "dir"]
KINDS: tuple[Kind, ...] = ("file", "symlink", "dir")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def check_path(path: object) -> str:
    """Return ``path`` if it is absolute and normalised; raise ManifestError if not.

    Normalised: starts with '/', no empty, '.' or '..' component, no trailing
    '/', no NUL. '/' itself is allowed (the root directory).
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ManifestError(
            "expected an absolute path", repr(path) if not isinstance(path, str) else path
        )
    if "\0" in path:
        raise ManifestError("path holds a NUL byte", path.replace("\0", "\\0"))
    if path != "/":
        parts = path[1:].split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ManifestError("path is not normalised (empty, '.' or '..' component)", path)
    return path


@dataclass(frozen=True, order=True)
class Entry:
    """One path of a manifest. ``mode`` holds permission bits only (0o7777)."""

    path: str
    kind: Kind
    mode: int
    size: int | None = None
    sha256: str | None = None
    target: str | None = None
    #: Modification time in ns since the epoch, when known. Part of the id: Python
    #: trusts a .pyc only if its source shows the mtime compiled into it, so an
    #: env root that hid mtimes would recompile the stdlib at every start.
    mtime: int | None = None
    #: The file's owner on the master when it is the manifest's owner (the job's
    #: user), so the job sees its own 0600 files as its own; None: root's.
    #: Absent from the document when None: ids of uid-less manifests are stable.
    uid: int | None = None

    def __post_init__(self) -> None:
        check_path(self.path)
        if self.uid is not None and (
            isinstance(self.uid, bool) or not isinstance(self.uid, int) or self.uid < 0
        ):
            raise ManifestError(f"uid {self.uid!r} is not a uid", self.path)
        if self.mtime is not None and (
            isinstance(self.mtime, bool) or not isinstance(self.mtime, int) or self.mtime < 0
        ):
            raise ManifestError(f"mtime {self.mtime!r} is not ns since the epoch", self.path)
        if self.kind not in KINDS:
            raise ManifestError(f"kind {self.kind!r} is not one of {KINDS}", self.path)
        if (
            isinstance(self.mode, bool)
            or not isinstance(self.mode, int)
            or not 0 <= self.mode <= 0o7777
        ):
            raise ManifestError(f"mode {self.mode!r} is not permission bits 0-0o7777", self.path)
        if self.kind == "file":
            if not is_sha256(self.sha256):
                raise ManifestError("a file needs a sha256 of 64 lowercase hex digits", self.path)
            if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
                raise ManifestError("a file needs a size >= 0", self.path)
            if self.target is not None:
                raise ManifestError("a file has no link target", self.path)
        elif self.kind == "symlink":
            if not isinstance(self.target, str) or not self.target or "\0" in self.target:
                raise ManifestError("a symlink needs a non-empty target without NUL", self.path)
            if self.sha256 is not None or self.size is not None:
                raise ManifestError("a symlink has no sha256 or size", self.path)
        elif any(v is not None for v in (self.sha256, self.size, self.target)):
            raise ManifestError("a directory has no sha256, size or target", self.path)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind,
            "mode": self.mode,
            "size": self.size,
            "sha256": self.sha256,
            "target": self.target,
        }
        if self.mtime is not None:  # absent, not null: ids of mtime-less manifests are stable
            doc["mtime"] = self.mtime
        if self.uid is not None:
            doc["uid"] = self.uid
        return doc

    @classmethod
    def from_document(cls, doc: object) -> Entry:
        if not isinstance(doc, dict):
            raise ManifestError(f"an entry must be an object, got {type(doc).__name__}")
        d: Any = doc  # values are checked by __post_init__
        unknown = set(d) - {"path", "kind", "mode", "size", "sha256", "target", "mtime", "uid"}
        if unknown:
            raise ManifestError(f"unknown keys {sorted(unknown)}", str(d.get("path")))
        return cls(
            d.get("path"),
            d.get("kind"),
            d.get("mode"),
            d.get("size"),
            d.get("sha256"),
            d.get("target"),
            d.get("mtime"),
            d.get("uid"),
        )


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


@dataclass(frozen=True)
class Manifest:
    """An immutable, validated manifest. Build with :func:`build` or :func:`loads`."""

    root: str
    entries: tuple[Entry, ...]
    owner: int | None = None
    _by_path: Mapping[str, Entry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_path(self.root)
        if self.owner is not None and (
            isinstance(self.owner, bool) or not isinstance(self.owner, int) or self.owner < 0
        ):
            raise ManifestError(f"owner {self.owner!r} is not a uid")
        for e in self.entries:
            # An entry is shown owned only by the job's user: never by anyone else.
            if e.uid is not None and e.uid != self.owner:
                raise ManifestError(
                    f"owned by uid {e.uid}, but the manifest is uid {self.owner}'s", e.path
                )
        # By path alone: two entries of one path (refused below) may hold None
        # where the other holds a number, which do not compare.
        ordered = tuple(sorted(self.entries, key=lambda e: e.path))
        by_path: dict[str, Entry] = {}
        for e in ordered:
            if e.path in by_path:
                raise ManifestError("path appears twice", e.path)
            by_path[e.path] = e
        for e in ordered:
            # The nearest listed ancestor must be a directory: under a file nothing
            # can exist, and under a symlink the kernel (or root, seeding a job's
            # /tmp) would follow the link out of the tree the manifest describes.
            ancestor = e.path
            while ancestor != "/":
                ancestor = _parent(ancestor)
                above = by_path.get(ancestor)
                if above is None:
                    continue
                if above.kind == "file":
                    raise ManifestError(f"parent {above.path} is a file", e.path)
                if above.kind == "symlink":
                    raise ManifestError(
                        f"it lies under the symlink {above.path}; list the link's target instead",
                        e.path,
                    )
                break
        object.__setattr__(self, "entries", ordered)
        object.__setattr__(self, "_by_path", by_path)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, path: str) -> Entry | None:
        return self._by_path.get(path)

    def objects(self) -> dict[str, int]:
        """sha256 -> size of every file body the manifest needs (deduplicated)."""
        return {
            e.sha256: e.size
            for e in self.entries
            if e.kind == "file" and e.sha256 is not None and e.size is not None
        }

    def with_owner(self, uid: int) -> Manifest:
        """The same files for ``uid``: entries it owns keep their ownership, others' lose it."""
        entries = tuple(e if e.uid == uid else replace(e, uid=None) for e in self.entries)
        return Manifest(self.root, entries, uid)

    def document(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "root": self.root,
            "owner": self.owner,
            "entries": [e.document() for e in self.entries],
        }

    def canonical(self) -> bytes:
        """The bytes whose sha256 is the id."""
        return json.dumps(
            self.document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @property
    def id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    @classmethod
    def from_document(cls, doc: object, *, expect_id: str | None = None) -> Manifest:
        """Validate a decoded document. With ``expect_id``, the result must have that id."""
        if not isinstance(doc, dict):
            raise ManifestError("a manifest must be a JSON object")
        d: Any = doc
        if d.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ManifestError(
                f"format version {d.get('version')!r} is not {FORMAT_VERSION}; upgrade Beolaunch"
            )
        entries = d.get("entries")
        if not isinstance(entries, list):
            raise ManifestError("'entries' must be a list")
        manifest = cls(
            d.get("root"),
            tuple(Entry.from_document(e) for e in entries),
            d.get("owner"),
        )
        claimed = expect_id or d.get("id")
        if claimed is not None and claimed != manifest.id:
            raise ManifestError(f"content has id {manifest.id}, not the {claimed} it claims")
        return manifest


def build(root: str, entries: Iterable[Entry], owner: int | None = None) -> Manifest:
    return Manifest(root, tuple(entries), owner)


def loads(data: bytes | str, *, expect_id: str | None = None) -> Manifest:
    """Parse and validate a manifest from JSON (canonical or not)."""
    try:
        doc = json.loads(data)
    except RecursionError:
        raise ManifestError("nested too deeply to be a manifest") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"not valid JSON: {exc}") from exc
    return Manifest.from_document(doc, expect_id=expect_id)


def dumps(manifest: Manifest) -> str:
    """The JSON ``beoctl closure --json`` prints: the id, then the document."""
    return json.dumps({"id": manifest.id, **manifest.document()}, indent=2)
