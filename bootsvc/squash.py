"""Stage 3 as a squashfs image: mounted by stage 2 as it is, never unpacked.

Measured under QEMU/TCG (bench/boot.py): busybox ``gzip -dc | cpio -idm`` of the
21 MB stage 3 took 12 of a node's 42.7 s from power-on to registered, while the
single-large-initramfs baseline, unpacked by the kernel, registered in 26.3 s.
A squashfs image is mounted read-only from the downloaded file (``-o loop``)
under an overlay whose upper layer is a tmpfs, so nothing is unpacked and only
the blocks Python and the agent read are decompressed, by the kernel, on first
access.

lz4 (``-Xhc``), not zstd: Python's start-up reads hundreds of small files, so
a boot decompresses many blocks, and under emulation the decompressor is what
costs. Measured under QEMU/TCG, one node each (zstd / lz4 / uncompressed):
19.4 / 25.3 / 61.4 MB; fetched and checked in 2.45 / 2.26 / 4.8 s; registered
32.7 / 27.1 / 28.6 s after power-on, the guest's emulation taking 31.3 / 25.5 /
27.0 CPU seconds. The Debian kernel has all three built in.

Made from the same members as the newc image (:mod:`bootsvc.stage3` builds
those): they are written into a temporary directory and given to
``mksquashfs`` (squashfs-tools) with every time and owner fixed, so the same
members give the same bytes (mksquashfs 4.5 is reproducible by default).
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from bootsvc import newc
from bootsvc.errors import Stage3BuildError

MKSQUASHFS = "mksquashfs"
#: First four bytes of a squashfs image (little-endian "hsqs").
MAGIC = b"hsqs"


def _materialize(members: list[newc.Member], root: Path) -> None:
    """Write ``members`` under ``root`` with their modes (owners: mksquashfs -all-root)."""
    dirs: list[tuple[Path, int]] = []
    for member in members:
        entry = member.entry
        path = root / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = stat.S_IFMT(entry.mode)
        if kind == stat.S_IFDIR:
            path.mkdir(exist_ok=True)
            dirs.append((path, stat.S_IMODE(entry.mode)))
        elif kind == stat.S_IFLNK:
            os.symlink(entry.data.decode(), path)
        elif kind == stat.S_IFREG:
            path.write_bytes(entry.data)
            os.chmod(path, stat.S_IMODE(entry.mode))
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            os.mknod(path, entry.mode, os.makedev(*entry.rdev))
        else:
            raise Stage3BuildError("stage 3 member", entry.path, f"unsupported file type {kind:o}")
    for path, mode in dirs:  # after their contents: a 0555 directory must still take files
        os.chmod(path, mode)


def from_newc(image: bytes, *, mtime: int = 0, work: Path | None = None) -> bytes:
    """The squashfs image of the gzip newc ``image``'s members.

    Raises Stage3BuildError when mksquashfs is missing (apt-get install
    squashfs-tools) or fails, or the image is not a gzip newc archive.
    """
    if shutil.which(MKSQUASHFS) is None:
        raise Stage3BuildError(MKSQUASHFS, "(not found)", "apt-get install squashfs-tools")
    try:
        members = newc.read(gzip.decompress(image))
    except (OSError, EOFError, ValueError) as exc:
        raise Stage3BuildError("stage 3 image", "(bytes)", f"not gzip newc: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="beolaunch-squash-", dir=work) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        root.chmod(0o755)
        _materialize(members, root)
        out = Path(tmp) / "stage3.squashfs"
        argv = [
            MKSQUASHFS,
            str(root),
            str(out),
            "-noappend",
            "-no-xattrs",
            "-all-root",
            "-comp",
            "lz4",
            "-Xhc",
            "-mkfs-time",
            str(mtime),
            "-all-time",
            str(mtime),
            "-no-progress",
            "-quiet",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise Stage3BuildError(
                MKSQUASHFS, " ".join(argv), (done.stderr or done.stdout).strip()[-400:]
            )
        return out.read_bytes()
