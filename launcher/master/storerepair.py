"""A damaged object in the master's store: found, quarantined, and ingested again.

A node refuses a job when every copy of an object failed verification
(``prepared.corrupt``). That may be the node's fault (bad memory, a network
path that corrupts data) or the store's (a bad disk under it, a careless
admin). Draining the node for the store's fault would take healthy nodes out
one after the other, so before a refusal drains anything the master hashes
its own copy:

- sound: the node's fault; the refusal drains it as before;
- damaged: it is replaced, in one rename, with the bytes of a file of the
  job's manifest with that content, opened as the job's user (the same rule
  as a submission: read access, now, to a file with that content), the
  damaged copy kept in ``STORE/quarantine/`` for a look; the node fills
  again, and so do the job's other nodes that fetched the damaged copy
  meanwhile. When no such file is left, the copy is moved to quarantine and
  the job fails with the reason; no node is drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from cachefs.errors import CachefsError
from cachefs.manifest import Manifest
from cachefs.store import Store, hash_file
from launcher.submission import opened_as

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"


@dataclass(frozen=True)
class Repair:
    """What the master found of one object its nodes could not verify."""

    damaged: bool
    #: damaged and ingested again: the refusing node may fill again
    repaired: bool
    message: str


def check_and_repair(store: Store, sha256: str, manifest: Manifest, uid: int) -> Repair:
    """Hash the store's copy of ``sha256``; if damaged, replace it with the bytes of
    one of ``manifest``'s files with that content, opened as ``uid`` (the damaged
    copy kept in quarantine; readers never find the object missing meanwhile),
    or, when no such file is left, move it to quarantine. Blocking."""
    path = store.path(sha256)
    try:
        sound = hash_file(path, follow_symlinks=False).sha256 == sha256
    except (CachefsError, OSError):
        sound = False  # missing or unreadable: as bad as damaged
    if sound:
        return Repair(False, False, f"the store's copy of {sha256} is sound")
    folder = store.root / QUARANTINE
    damaged = f"object {sha256} was damaged in the master's store (quarantined in {folder})"
    paths = sorted({e.path for e in manifest if e.sha256 == sha256})
    try:
        account = pwd.getpwuid(uid)
    except KeyError:
        account = None
    if account is not None:
        groups = os.getgrouplist(account.pw_name, account.pw_gid)
        for candidate in paths:
            if _replace_from(store, sha256, candidate, uid, account.pw_gid, groups, folder):
                return Repair(True, True, f"{damaged}; ingested again from {candidate}")
    _quarantine(path, sha256, folder)
    where = ", ".join(paths) or "no path"
    return Repair(
        True,
        False,
        f"{damaged}; no file with its content is left at {where}: submit the job again",
    )


def _replace_from(
    store: Store, sha256: str, path: str, uid: int, gid: int, groups: list[int], folder: Path
) -> bool:
    """Replace the damaged copy with ``path``'s bytes, the file opened as the user."""
    with opened_as(uid, gid, groups, [path]) as fds:
        fd = fds[path]
        if isinstance(fd, str):
            log.info("cannot read %s again as uid %d: %s", path, uid, fd)
            return False
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            # The magic link reopens the very file the user opened.
            store.repair(sha256, Path(f"/proc/self/fd/{fd}"), folder)
        except (CachefsError, OSError) as exc:
            log.info("cannot ingest %s again from %s: %s", sha256, path, exc)
            return False
    return True


def _quarantine(path: Path, sha256: str, folder: Path) -> None:
    """Move the damaged copy out of ``objects/`` (kept, named with the time)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    dest = folder / f"{sha256}.{time.strftime('%Y%m%dT%H%M%S')}"
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, dest)


class StoreChecks:
    """Checks of objects nodes could not verify: one at a time per object (a job's
    nodes refuse the same damaged copy together), and, per job, the objects
    repaired, so a node that fetched the damaged copy before the repair fills
    again without blaming it. Used on the master's event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._running: dict[str, asyncio.Future[Repair]] = {}
        self._repaired: dict[int, set[str]] = {}

    async def check(
        self, job: int, sha256: str, manifest: Manifest, uid: int
    ) -> tuple[Repair, bool]:
        """What the store's copy was, and whether this call is the one that found it
        (and should say so). A failed check is not damage: the refusal stands."""
        if sha256 in self._repaired.get(job, ()):
            return Repair(True, True, ""), False
        running = self._running.get(sha256)
        first = running is None
        if running is None:
            running = asyncio.ensure_future(
                asyncio.to_thread(check_and_repair, self.store, sha256, manifest, uid)
            )
            self._running[sha256] = running
        try:
            found = await asyncio.shield(running)
        except Exception as exc:
            log.exception("job %d: checking object %s failed", job, sha256)
            found = Repair(False, False, f"checking the store failed: {exc}")
        finally:
            if self._running.get(sha256) is running:
                del self._running[sha256]
        if not found.damaged and sha256 in self._repaired.get(job, ()):
            return Repair(True, True, ""), False  # sound again: repaired for another node
        if found.repaired:
            self._repaired.setdefault(job, set()).add(sha256)
        return found, first

    def forget(self, job: int) -> None:
        self._repaired.pop(job, None)
