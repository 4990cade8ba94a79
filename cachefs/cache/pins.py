"""The pin file: which job holds which objects, persisted across restarts.

ROOT/pins.json is ``{"version": 1, "pins": {job: {sha256: size}}}``. Sizes are
kept so the bytes pinned for objects not downloaded yet are known (a fill pins
first, then downloads). It is replaced whole: written to ROOT/tmp, fsynced,
renamed over the old one, and the directory fsynced, so a crash leaves either
the old or the new file, never a torn one. Callers hold the metadata lock
(locks.py) around a load and the save that follows it.

Last use is not kept here: it is each object file's atime (see node.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cachefs.atomicfile import write_atomic
from cachefs.cache import layout
from cachefs.errors import CacheMetadataError
from cachefs.manifest import is_sha256

VERSION = 1
Pins = dict[str, dict[str, int]]


def load(root: Path) -> Pins:
    """The pins on disk ({} when no job ever pinned); CacheMetadataError if the
    file is not one this module wrote."""
    path = root / layout.PINS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CacheMetadataError(str(path), f"cannot read: {exc}") from exc
    try:
        doc: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheMetadataError(str(path), f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise CacheMetadataError(str(path), f"not a version {VERSION} pin file")
    jobs = doc.get("pins")
    if not isinstance(jobs, dict):
        raise CacheMetadataError(str(path), "'pins' is not an object")
    pins: Pins = {}
    for job, objects in jobs.items():
        if not isinstance(objects, dict) or not all(
            is_sha256(sha) and isinstance(size, int) and size >= 0 for sha, size in objects.items()
        ):
            raise CacheMetadataError(str(path), f"job {job!r}: expected sha256 -> size")
        pins[job] = dict(objects)
    return pins


def save(root: Path, pins: Pins) -> None:
    """Replace the pin file atomically. Jobs without objects are dropped."""
    kept = {job: objects for job, objects in pins.items() if objects}
    data = json.dumps({"version": VERSION, "pins": kept}, sort_keys=True).encode()
    try:
        write_atomic(root / layout.PINS, data, mode=0o600, tmp_dir=root / layout.TMP)
    except OSError as exc:
        raise layout.io_error(root / layout.TMP, exc, len(data)) from exc


def union(pins: Pins) -> dict[str, int]:
    """Every pinned object, whichever job pins it: sha256 -> size."""
    merged: dict[str, int] = {}
    for objects in pins.values():
        merged.update(objects)
    return merged
