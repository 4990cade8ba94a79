"""Replace a file whole: readers, and a crash, see the old content or the new, never a torn one.

The new content goes to a temporary file beside the target (or in ``tmp_dir``
on the same filesystem), created 0600 with ``O_EXCL`` and ``O_NOFOLLOW`` (a
secret is never readable on its way in, a planted link is not followed), set
to ``mode`` (and ``owner``), fsynced, renamed over the target, and the
directory fsynced so the rename itself survives a power cut. On any failure
the temporary file is removed and the target is untouched.

Not for content-addressed objects: the store and the node cache hash what
they write and rename only a verified copy (store.py, cache/fetch.py).
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

#: ``fsync`` of a directory fails with these where a filesystem cannot do it
#: (some FUSE and network mounts): the rename is then left to its own order.
_NO_DIR_FSYNC = (errno.EINVAL, errno.ENOTSUP)


def write_atomic(
    path: Path,
    data: bytes | str,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    tmp_dir: Path | None = None,
) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8), mode ``mode``
    exactly (the umask does not apply), owned by ``owner`` (uid, gid) when given.

    Raises OSError (the target is then as it was, and no temporary file is left).
    """
    content = data.encode() if isinstance(data, str) else data
    directory = tmp_dir if tmp_dir is not None else path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace_if_changed(
    path: Path, data: bytes | str, *, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> bool:
    """:func:`write_atomic` unless ``path`` already holds ``data``; True when it wrote.

    Only the content is compared (a file that holds ``data`` keeps its mode).
    """
    content = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == content:
            return False
    except OSError:
        pass  # missing or unreadable: written anew (a real problem shows in the write)
    write_atomic(path, content, mode=mode, owner=owner)
    return True


def fsync_dir(path: Path) -> None:
    """Make the renames in directory ``path`` durable (a no-op where the
    filesystem cannot fsync a directory). Raises OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)
