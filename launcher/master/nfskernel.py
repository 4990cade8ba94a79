"""The kernel's nfsd as the master's NFS server: an exports file and ``exportfs -ra``.

Untested on the machine this was written on (its kernel has no nfsd): the
rendered text is unit-tested (:func:`launcher.master.nfstext.kernel_exports`),
the commands are the ones nfs-kernel-server documents. nfsd itself (its
threads, address, port, versions) is the site's: ``/etc/nfs.conf`` and
``systemctl start nfs-server``; docs/nfs.md.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cachefs.atomicfile import write_atomic
from launcher.errors import NfsServerError

EXPORTS_FILE = Path("/etc/exports.d/beolaunch.exports")
NFSD_THREADS = Path("/proc/fs/nfsd/threads")
EXPORTFS: tuple[str, ...] = ("exportfs", "-ra")


def usable(filesystems: Path = Path("/proc/filesystems")) -> bool:
    """Whether this kernel has nfsd (``/proc/fs/nfsd`` can be mounted) and nfs-utils'
    ``exportfs`` is installed."""
    try:
        known = filesystems.read_text()
    except OSError:
        return False
    has_nfsd = NFSD_THREADS.parent.is_dir() and any(
        line.split()[-1:] == ["nfsd"] for line in known.splitlines()
    )
    return has_nfsd and shutil.which(EXPORTFS[0]) is not None


def apply(text: str, exports_file: Path = EXPORTS_FILE, exportfs: Sequence[str] = EXPORTFS) -> None:
    """Write ``text`` to ``exports_file`` and have nfsd reread every exports file.
    Raises NfsServerError with exportfs's message."""
    try:
        exports_file.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(exports_file, text, mode=0o644)
    except OSError as exc:
        raise NfsServerError(f"cannot write {exports_file}: {exc.strerror}") from exc
    _exportfs(exportfs)


def remove(exports_file: Path = EXPORTS_FILE, exportfs: Sequence[str] = EXPORTFS) -> bool:
    """Remove our exports file and unexport what it held; whether there was one."""
    try:
        exports_file.unlink()
    except FileNotFoundError:
        return False
    _exportfs(exportfs)
    return True


def running(threads: Path = NFSD_THREADS) -> bool:
    """Whether nfsd has threads (it serves)."""
    with contextlib.suppress(OSError, ValueError):
        return int(threads.read_text().strip() or 0) > 0
    return False


def _exportfs(argv: Sequence[str]) -> None:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise NfsServerError(
            f'{argv[0]} not found: install nfs-kernel-server, or set [nfs] server = "ganesha"'
        ) from None
    if done.returncode != 0:
        raise NfsServerError(
            f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip() or done.stdout}"
        )
