"""Kernel import: a Debian linux-image .deb, or a directory holding its files.

The input has ``boot/vmlinuz-VERSION`` and ``lib/modules/VERSION`` (or
``usr/lib/modules/VERSION``). The vmlinuz becomes a ``kernel`` boot image; the
module tree is kept at ``STATE/boot/kernels/VERSION/lib/modules/VERSION``, where
the stage-2/3 builders read modules.alias, modules.dep and the ``.ko`` files.

Everything is built in a temp dir under STATE/boot/kernels and renamed into
place, and the temp dir is removed whatever happens: a failed import keeps
nothing. Debian's .deb has no modules.dep/modules.alias (its postinst runs
depmod), so depmod is run on the extracted tree when they are missing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from bootsvc.errors import BootImageError, KernelImportError
from bootsvc.images import CHUNK, check_clash, kernel_modules_dir, kernels_dir, store_image
from launcher.state.models import BootImage

DEPMOD = "/usr/sbin/depmod"
DPKG_DEB = "dpkg-deb"
# The x86 boot protocol's header signature at offset 0x202 of a bzImage.
BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_MAGIC = b"HdrS"
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+~-]*")


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
    if source.is_dir():
        is_deb = False
    elif source.is_file() and source.name.endswith(".deb"):
        is_deb = True
    else:
        raise KernelImportError(
            source, "not a linux-image .deb file or a directory with boot/ and lib/modules/"
        )
    kernels = kernels_dir(state_dir)
    kernels.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=kernels, prefix=".import-"))
    try:
        if is_deb:
            root = work / "deb"
            progress(f"hashing {source.name}")
            origin: dict[str, str] = {"deb": source.name, "sha256": _sha256_file(source)}
            again = _imported_deb(session, state_dir, origin["sha256"], name)
            if again is not None:
                return again
            progress(f"extracting {source.name}")
            _run(source, [DPKG_DEB, "-x", str(source), str(root)], "dpkg-deb -x")
        else:
            root = source
            origin = {"dir": str(source.resolve())}
        vmlinuz, modules = _find_kernel(source, root)
        version = vmlinuz.name.removeprefix("vmlinuz-")
        _check_bzimage(source, vmlinuz)
        name = name or f"linux-{version}"
        progress(f"hashing {vmlinuz.name}")
        sha256 = _sha256_file(vmlinuz)
        # Refuse a clash, or see it is already here, before copying 400 MB of modules.
        holders = _holders(session, source, version, sha256)
        existing = check_clash(session, name, "kernel", sha256)
        final = kernels_dir(state_dir) / version
        if existing is not None and (final / "lib" / "modules" / version / "modules.dep").is_file():
            return ImportedKernel(existing, version, kernel_modules_dir(state_dir, existing), False)
        tree = work / "tree"
        target = tree / "lib" / "modules" / version
        target.parent.mkdir(parents=True)
        if is_deb:
            modules.rename(target)
        else:
            progress(f"copying {modules}")
            shutil.copytree(modules, target, symlinks=True)
        if not (target / "modules.dep").is_file() or not (target / "modules.alias").is_file():
            progress(f"running depmod for {version}")
            _run(source, [depmod, "-b", str(tree), version], "depmod")
        for index in ("modules.dep", "modules.alias"):
            if not (target / index).is_file():
                raise KernelImportError(
                    source, f"no {index} for {version} after depmod; is kmod's depmod working?"
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


def _find_kernel(source: Path, root: Path) -> tuple[Path, Path]:
    """The one ``boot/vmlinuz-VERSION`` under ``root`` and its ``lib/modules/VERSION``."""
    found: list[tuple[Path, Path]] = []
    boot = root / "boot"
    names = sorted(p.name for p in boot.glob("vmlinuz-*")) if boot.is_dir() else []
    for vm in names:
        version = vm.removeprefix("vmlinuz-")
        if not _VERSION.fullmatch(version):
            continue
        for lib in ("lib", "usr/lib"):
            modules = root / lib / "modules" / version
            if modules.is_dir():
                found.append((boot / vm, modules))
                break
    if not found:
        what = f"boot/{names[0]}" if names else "no boot/vmlinuz-VERSION"
        raise KernelImportError(
            source,
            f"{what} with a matching lib/modules/VERSION not found; give a linux-image .deb "
            "or a directory holding boot/vmlinuz-VERSION and lib/modules/VERSION",
        )
    if len(found) > 1:
        versions = ", ".join(v.name.removeprefix("vmlinuz-") for v, _ in found)
        raise KernelImportError(
            source, f"holds several kernels ({versions}); give a directory with one"
        )
    return found[0]


def _check_bzimage(source: Path, vmlinuz: Path) -> None:
    try:
        with vmlinuz.open("rb") as f:
            f.seek(BZIMAGE_MAGIC_OFFSET)
            magic = f.read(len(BZIMAGE_MAGIC))
    except OSError as exc:
        raise KernelImportError(source, f"cannot read {vmlinuz}: {exc.strerror}") from exc
    if magic != BZIMAGE_MAGIC:
        raise KernelImportError(
            source,
            f"{vmlinuz.name} is not an x86 bzImage (no 'HdrS' at offset 0x202); "
            "iPXE boots bzImage kernels only",
        )


def _run(source: Path, argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise KernelImportError(
            source, f"cannot run {argv[0]}: {exc.strerror}; install it (dpkg, kmod)"
        ) from exc
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip() or "no output")[-500:]
        raise KernelImportError(source, f"{what} failed (exit status {done.returncode}): {detail}")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
