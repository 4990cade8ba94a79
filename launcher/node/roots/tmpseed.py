"""Seeding a job's fresh /tmp as root, without ever following a path from a manifest.

The agent runs as root and the manifest's paths come from a user (forged ones
included). Everything here is made relative to directory file descriptors
opened with ``O_NOFOLLOW``: a symlink where a directory is expected (one the
manifest itself put there, or one a task planted since) fails the step with
ELOOP/ENOTDIR instead of leading root's ``mkdir`` or ``symlink`` elsewhere.
:class:`cachefs.manifest.Manifest` already refuses entries under a symlink
entry; this is the second wall, for whatever the first misses.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from cachefs.errors import ManifestError
from cachefs.manifest import Manifest, check_path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP = "/tmp/"


def _under_tmp(path: str) -> list[str] | None:
    """The components of ``path`` below /tmp, or None when it is not a normalised
    path strictly under /tmp."""
    try:
        check_path(path)
    except ManifestError:
        return None
    if not path.startswith(TMP):
        return None
    return path[len(TMP) :].split("/")


@contextlib.contextmanager
def _walk(top: int, parts: Sequence[str], *, mode: int = 0o755) -> Iterator[tuple[int, bool]]:
    """An fd on directory ``top/parts...``, making missing directories (``mode``);
    yields ``(fd, made_last)``. Never follows a symlink: raises OSError (ELOOP,
    ENOTDIR) when a component is not a plain directory."""
    fds: list[int] = []
    current = top
    made = False
    try:
        for name in parts:
            made = False
            try:
                os.mkdir(name, mode, dir_fd=current)
                made = True
            except FileExistsError:
                pass
            current = os.open(name, _DIR_FLAGS, dir_fd=current)
            fds.append(current)
        yield current, made
    finally:
        for fd in fds:
            os.close(fd)


def seed_tmp(manifest: Manifest, tmp: Path, cwds: Sequence[tuple[str, int, int]] = ()) -> int:
    """Lay the manifest's directories and symlinks under /tmp into a job's fresh tmp.

    The job's tmp is bound over the root's /tmp, hiding what the user submitted
    from there; the sandbox binds the submitted files back at each task start,
    and this recreates the directories and symlinks around them (a program
    built in /tmp with ``libfoo.so.1 -> libfoo.so.1.0`` needs the link).
    Task working directories under /tmp (``cwds``: path, uid, gid) are made
    too, the last component owned by the task's user, so a job submitted from
    /tmp/work starts there and can write there. Returns how many entries it made.

    ``tmp`` itself must be a directory only root can replace (under the agent's
    0711 roots dir). Raises OSError when a component below it is a symlink or
    not a directory: the job cannot start, and nothing outside ``tmp`` changed.
    """
    made = 0
    top = os.open(tmp, _DIR_FLAGS)
    try:
        for cwd, uid, gid in cwds:
            parts = _under_tmp(cwd)
            if parts is None:
                continue
            with _walk(top, parts) as (fd, new):
                if new:
                    os.fchown(fd, uid, gid)
                    made += 1
        for entry in manifest:
            parts = _under_tmp(entry.path)
            if parts is None or entry.kind == "file":
                continue
            if entry.kind == "dir":
                with _walk(top, parts):
                    made += 1
                continue
            assert entry.target is not None
            with _walk(top, parts[:-1]) as (fd, _):
                try:
                    os.symlink(entry.target, parts[-1], dir_fd=fd)
                except FileExistsError:
                    continue
                made += 1
    finally:
        os.close(top)
    return made
