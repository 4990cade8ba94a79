"""The cpio "newc" format (magic 070701) that Linux unpacks as an initramfs.

Written here rather than by the ``cpio`` program so an archive depends only on
its entries: every header field that a build host would leak (inode, device,
owner, time, link count of the source files) is fixed by the writer.

Layout (``Documentation/driver-api/early-userspace/buffer-format.rst``): a
110-byte ASCII header (magic + 13 fields of 8 hex digits), the NUL-terminated
name padded to a multiple of 4, the data padded to a multiple of 4; the last
entry is named ``TRAILER!!!``.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

from bootsvc.errors import Stage2BuildError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_HEADER = 110


@dataclass(frozen=True)
class Entry:
    """One archive member. ``path`` is relative (no leading ``/``); ``data`` is a
    file's content or a symlink's target; ``rdev`` is (major, minor) for devices."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def regular(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(
    ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int], namesize: int
) -> bytes:
    # uid, gid, devmajor, devminor and check are always 0.
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    return MAGIC + b"".join(b"%08X" % value for value in fields)


def write(entries: Iterable[Entry], mtime: int = 0) -> bytes:
    """The newc archive of ``entries``, sorted by path, inode numbers 1, 2, ...

    Owner is root, every time is ``mtime`` (seconds since the epoch), so the
    bytes depend only on the entries and ``mtime``. A parent sorts before its
    children because it is their prefix. Raises :class:`Stage2BuildError` on a
    duplicate or absolute path.
    """
    ordered = sorted(entries, key=lambda entry: entry.path)
    out = bytearray()
    previous = None
    for ino, entry in enumerate(ordered, 1):
        if entry.path == previous:
            raise Stage2BuildError(
                "archive entry", entry.path, "appears twice; give each file one path"
            )
        if entry.path.startswith("/") or not entry.path:
            raise Stage2BuildError("archive entry", entry.path, "must be a non-empty relative path")
        previous = entry.path
        name = entry.path.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _header(ino, entry.mode, nlink, mtime, len(entry.data), entry.rdev, len(name))
        out += name + _pad(_HEADER + len(name))
        out += entry.data + _pad(len(entry.data))
    name = TRAILER.encode() + b"\0"
    out += _header(0, 0, 1, 0, 0, (0, 0), len(name)) + name + _pad(_HEADER + len(name))
    return bytes(out)


@dataclass(frozen=True)
class Member:
    """One member read back: its entry plus the header fields the writer fixes."""

    entry: Entry
    ino: int
    uid: int
    gid: int
    nlink: int
    mtime: int


def read(archive: bytes) -> list[Member]:
    """The members of a newc ``archive`` up to its trailer, in archive order.

    Raises :class:`Stage2BuildError` when the bytes are not a newc archive.
    """
    members: list[Member] = []
    offset = 0
    while True:
        head = archive[offset : offset + _HEADER]
        if len(head) < _HEADER or head[:6] != MAGIC:
            raise Stage2BuildError("archive", f"offset {offset}", "no newc header (070701) here")
        try:
            fields = [int(head[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise Stage2BuildError(
                "archive", f"offset {offset}", "header field is not hex"
            ) from exc
        ino, mode, uid, gid, nlink, mtime, size = fields[:7]
        rdev = (fields[9], fields[10])
        namesize = fields[11]
        start = offset + _HEADER
        name = archive[start : start + namesize - 1].decode()
        start += namesize + len(_pad(_HEADER + namesize))
        if name == TRAILER:
            return members
        data = archive[start : start + size]
        offset = start + size + len(_pad(size))
        members.append(Member(Entry(name, mode, data, rdev), ino, uid, gid, nlink, mtime))
