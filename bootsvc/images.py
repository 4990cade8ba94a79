"""Boot image files: content-addressed under STATE/boot/images, kernels' module trees.

An image is the file ``STATE/boot/images/SHA256``; its ``boot_images`` row
(name, kind, sha256, size, built_from) is launcher's (:mod:`launcher.state.bootimages`).
Files are written to a temp file in the same directory, fsynced and renamed, so a
reader (the boot HTTP service) sees a whole file or none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from bootsvc.errors import BootImageError

CHUNK = 1 << 20  # bytes copied and hashed at a time (1 MiB)


def images_dir(state_dir: Path) -> Path:
    """STATE/boot/images: one file per image, named by its sha256."""
    return state_dir / "boot" / "images"


def kernels_dir(state_dir: Path) -> Path:
    """STATE/boot/kernels: one ``VERSION/lib/modules/VERSION`` tree per imported kernel."""
    return state_dir / "boot" / "kernels"


def image_path(state_dir: Path, sha256: str) -> Path:
    """The file of the image with this sha256 (64 lowercase hex; BootImageError otherwise)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise BootImageError(sha256, "not a sha256: expected 64 lowercase hex digits")
    return images_dir(state_dir) / sha256


@contextmanager
def staged(directory: Path, data: bytes | Path) -> Iterator[tuple[Path, str, int]]:
    """A fsynced temp file in ``directory`` holding ``data``, with its sha256 and size;
    removed on exit unless renamed away."""
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".incoming-")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, bytes):
                digest.update(data)
                out.write(data)
                size = len(data)
            else:
                try:
                    src: BinaryIO = data.open("rb")
                except OSError as exc:
                    raise BootImageError(str(data), f"cannot read: {exc.strerror}") from exc
                with src:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # served to nodes; nothing secret
        yield tmp, digest.hexdigest(), size
    finally:
        tmp.unlink(missing_ok=True)


def place(tmp: Path, final: Path, size: int) -> bool:
    """Rename ``tmp`` to ``final`` unless an intact copy is there; True if this created it."""
    try:
        if final.stat().st_size == size:
            return False  # content-addressed: same name and size is the same file
    except FileNotFoundError:
        pass
    os.replace(tmp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def remove_paths(paths: list[Path]) -> None:
    """Remove files and trees a deleted image leaves (missing ones are fine): the paths
    :func:`launcher.state.bootimages.delete_image` returns."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
