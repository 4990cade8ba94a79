"""Kernel import: a linux-image .deb or a directory becomes a ``kernel`` boot image.

The files are bootsvc's (:mod:`bootsvc.kernel`: find, check, extract, depmod);
this module records them. The vmlinuz becomes a ``kernel`` boot image; the
module tree is kept at ``STATE/boot/kernels/VERSION/lib/modules/VERSION``.
Everything is built in a temp dir under STATE/boot/kernels and renamed into
place, and the temp dir is removed whatever happens: a failed import keeps
nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from bootsvc import kernel as kernelfiles
from bootsvc.errors import BootImageError, KernelImportError
from bootsvc.images import kernels_dir
from bootsvc.kernel import DEPMOD
from launcher.state.bootimages import check_clash, kernel_modules_dir, store_image
from launcher.state.models import BootImage


@dataclass(frozen=True)
class ImportedKernel:
    image: BootImage
    version: str
    modules_dir: Path  # STATE/boot/kernels/VERSION/lib/modules/VERSION
    new: bool  # False: this kernel was imported before and nothing changed


def _no_progress(_: str) -> None:
    pass


def import_kernel(
    session: Session,
    state_dir: Path,
    source: Path,
    *,
    name: str | None = None,
    progress: Callable[[str], None] = _no_progress,
    depmod: str = DEPMOD,
) -> ImportedKernel:
    """Import the kernel in ``source`` (a linux-image .deb or a directory) as image
    ``name`` (default ``linux-VERSION``). The row is added to ``session``; the
    caller commits. Importing the same kernel under the same name again changes
    nothing. Raises KernelImportError (bad input, tool failure) or BootImageError
    (name or bytes already used); nothing is left behind then.
    """
    is_deb = kernelfiles.is_deb(source)
    kernels = kernels_dir(state_dir)
    kernels.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=kernels, prefix=".import-"))
    try:
        if is_deb:
            root = work / "deb"
            progress(f"hashing {source.name}")
            origin: dict[str, str] = {"deb": source.name, "sha256": kernelfiles.sha256_file(source)}
            again = _imported_deb(session, state_dir, origin["sha256"], name)
            if again is not None:
                return again
            progress(f"extracting {source.name}")
            kernelfiles.extract_deb(source, root)
        else:
            root = source
            origin = {"dir": str(source.resolve())}
        vmlinuz, modules = kernelfiles.find_kernel(source, root)
        version = vmlinuz.name.removeprefix("vmlinuz-")
        kernelfiles.check_bzimage(source, vmlinuz)
        name = name or f"linux-{version}"
        progress(f"hashing {vmlinuz.name}")
        sha256 = kernelfiles.sha256_file(vmlinuz)
        # Refuse a clash, or see it is already here, before copying 400 MB of modules.
        holders = _holders(session, source, version, sha256)
        existing = check_clash(session, name, "kernel", sha256)
        final = kernels_dir(state_dir) / version
        if existing is not None and (final / "lib" / "modules" / version / "modules.dep").is_file():
            return ImportedKernel(existing, version, kernel_modules_dir(state_dir, existing), False)
        tree = work / "tree"
        kernelfiles.build_module_tree(
            source, modules, tree, version, move=is_deb, depmod=depmod, progress=progress
        )
        progress(f"storing {vmlinuz.name}")
        return _register(session, state_dir, vmlinuz, tree, version, origin, name, holders)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _imported_deb(
    session: Session, state_dir: Path, deb_sha256: str, name: str | None
) -> ImportedKernel | None:
    """The earlier import of this very .deb (same sha256) when it is whole: no need to
    extract 400 MB again to find it is the same. BootImageError if it is under another name."""
    for k in session.scalars(select(BootImage).where(BootImage.kind == "kernel")):
        found = k.built_from or {}
        origin = found.get("source")
        version = found.get("version")
        if not isinstance(origin, dict) or origin.get("sha256") != deb_sha256:
            continue
        if not isinstance(version, str):
            continue
        modules = kernel_modules_dir(state_dir, k)
        if not (modules / "modules.dep").is_file():
            return None  # the tree is gone: import again, which puts it back
        if name is not None and name != k.name:
            raise BootImageError(
                name,
                f"this .deb is already the kernel image {k.name!r}; use that name, "
                "or remove it first",
            )
        return ImportedKernel(k, version, modules, False)
    return None


def _holders(session: Session, source: Path, version: str, sha256: str) -> list[BootImage]:
    """The kernel rows of ``version`` (same bytes); KernelImportError if one has other bytes
    (both would need STATE/boot/kernels/VERSION)."""
    holders = [
        k
        for k in session.scalars(select(BootImage).where(BootImage.kind == "kernel"))
        if (k.built_from or {}).get("version") == version
    ]
    for other in holders:
        if other.sha256 != sha256:
            raise KernelImportError(
                source,
                f"kernel version {version} is already imported as image {other.name!r} "
                f"(other bytes, sha256 {other.sha256[:12]}); 'beoctl boot remove {other.name}' "
                "first (its module tree has the same path)",
            )
    return holders


def _register(
    session: Session,
    state_dir: Path,
    vmlinuz: Path,
    tree: Path,
    version: str,
    origin: dict[str, str],
    name: str,
    holders: list[BootImage],
) -> ImportedKernel:
    """Put ``tree`` at STATE/boot/kernels/VERSION and store the vmlinuz; undo the
    first if the second fails."""
    final = kernels_dir(state_dir) / version
    placed = False
    if final.exists() and not holders:
        # Left by an import whose transaction did not commit: nobody uses it.
        shutil.rmtree(final)
    if not final.exists():
        tree.rename(final)
        placed = True
    before = {k.id for k in holders}
    try:
        image = store_image(
            session,
            state_dir,
            vmlinuz,
            kind="kernel",
            name=name,
            built_from={
                "version": version,
                "source": origin,
                "modules_dir": f"boot/kernels/{version}/lib/modules",
            },
        )
    except BaseException:
        if placed:
            shutil.rmtree(final, ignore_errors=True)
        raise
    return ImportedKernel(
        image=image,
        version=version,
        modules_dir=kernel_modules_dir(state_dir, image),
        new=image.id not in before,
    )
