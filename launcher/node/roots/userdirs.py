"""Where a user's job roots and tmp dirs live on a node: reachable by that user only.

An environment root shows the manifest's files, some of them from the user's
0700 home or copies of 0600 files, and a job's tmp holds what its tasks write.
Both live under ``ROOTS/u<UID>/``, one directory per user:

    ROOTS/               root 0711: anyone may pass, nobody may list
    ROOTS/u1000/         root 0700 plus the ACL ``user:1000:--x``: only uid 1000
                         (and root) may pass; nobody but root may list or change it
    ROOTS/u1000/42       job 42's root (a FUSE mount or a farm)
    ROOTS/u1000/42.tmp   job 42's /tmp (1777, like a host's)

The user must pass through (a Slurm step enters its root as the user), but
must not be able to rename or replace anything there: root mounts and removes
roots by these paths. So the directory stays root's, and the user gets search
permission through a POSIX ACL. Where the filesystem has no ACLs (tmpfs
without CONFIG_TMPFS_POSIX_ACL), the directory is ``root:<user's group> 0710``
instead, which also lets that group's other members pass; a warning says so.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import struct
from pathlib import Path

from launcher.errors import EnvRootError

log = logging.getLogger(__name__)

ROOTS_MODE = 0o711
USER_DIR_MODE = 0o700
#: POSIX ACL xattr (linux/posix_acl_xattr.h): a version, then (tag, perm, id) entries
#: sorted by tag then id.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
_SEARCH = 0o1


def search_acl(uid: int) -> bytes:
    """The ACL ``user::rwx user:UID:--x group::--- mask::--x other::---``."""
    entries = [
        (_USER_OBJ, 0o7, _UNDEFINED_ID),
        (_USER, _SEARCH, uid),
        (_GROUP_OBJ, 0, _UNDEFINED_ID),
        (_MASK, _SEARCH, _UNDEFINED_ID),
        (_OTHER, 0, _UNDEFINED_ID),
    ]
    return struct.pack("<I", _ACL_VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries
    )


def prepare_roots_dir(roots: Path) -> None:
    """Make the roots directory (root's, 0711). Raises OSError."""
    roots.mkdir(parents=True, exist_ok=True)
    os.chmod(roots, ROOTS_MODE)


def user_dir(roots: Path, uid: int, gid: int, *, job: str = "?") -> Path:
    """``ROOTS/u<uid>``, made if missing, passable by ``uid`` only (see the module doc).

    Raises EnvRootError when it exists but is not a directory of root's (it
    was replaced: never use it), or its permissions cannot be set.
    """
    path = roots / f"u{uid}"
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, USER_DIR_MODE)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise EnvRootError(job, path, "it is not a directory of the agent's; remove it")
        os.chmod(path, USER_DIR_MODE)
        try:
            os.setxattr(path, _ACL_XATTR, search_acl(uid), follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            log.warning(
                "%s: no POSIX ACLs on this filesystem; group %d may pass too (root:%d 0710)",
                path,
                gid,
                gid,
            )
            os.chown(path, os.geteuid(), gid, follow_symlinks=False)
            os.chmod(path, 0o710)
    except OSError as exc:
        raise EnvRootError(job, path, f"cannot make the user's roots dir: {exc}") from exc
    return path


def leftover_roots(roots: Path) -> list[Path]:
    """Every root and tmp dir under ``roots`` (in the users' dirs, and directly
    under it as agents before the users' dirs laid them out), deepest first;
    symlinks are never listed."""
    found: list[Path] = []
    if not roots.is_dir():
        return found
    for path in sorted(roots.iterdir()):
        if not path.is_dir() or path.is_symlink():
            continue
        if path.name.startswith("u") and path.name[1:].isdigit():
            found.extend(p for p in sorted(path.iterdir()) if p.is_dir() and not p.is_symlink())
        found.append(path)
    return found


def remove_empty_user_dirs(roots: Path) -> None:
    """Remove the users' dirs that hold nothing any more (the agent is stopping)."""
    if not roots.is_dir():
        return
    for path in roots.iterdir():
        if path.name.startswith("u") and path.name[1:].isdigit() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.rmdir()
