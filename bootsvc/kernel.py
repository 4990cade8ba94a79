"""Kernel files: a Debian linux-image .deb, or a directory holding its files.

The input has ``boot/vmlinuz-VERSION`` and ``lib/modules/VERSION`` (or
``usr/lib/modules/VERSION``). This module finds and checks them, extracts a
.deb and builds the module tree the stage-2/3 builders read (modules.alias,
modules.dep and the ``.ko`` files); recording the kernel as a boot image is
launcher's (:mod:`launcher.state.kernelimport`). Debian's .deb has no
modules.dep/modules.alias (its postinst runs depmod), so depmod is run on the
tree when they are missing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from bootsvc.errors import KernelImportError
from bootsvc.images import CHUNK

DEPMOD = "/usr/sbin/depmod"
DPKG_DEB = "dpkg-deb"
# The x86 boot protocol's header signature at offset 0x202 of a bzImage.
BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_MAGIC = b"HdrS"
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+~-]*")


def is_deb(source: Path) -> bool:
    """Whether ``source`` is a .deb file (True) or a directory (False); KernelImportError
    for anything else."""
    if source.is_dir():
        return False
    if source.is_file() and source.name.endswith(".deb"):
        return True
    raise KernelImportError(
        source, "not a linux-image .deb file or a directory with boot/ and lib/modules/"
    )


def extract_deb(source: Path, root: Path) -> None:
    """Extract the .deb ``source`` into ``root`` (dpkg-deb -x); KernelImportError on failure."""
    _run(source, [DPKG_DEB, "-x", str(source), str(root)], "dpkg-deb -x")


def build_module_tree(
    source: Path,
    modules: Path,
    tree: Path,
    version: str,
    *,
    move: bool,
    depmod: str,
    progress: Callable[[str], None],
) -> None:
    """Put ``modules`` (``lib/modules/VERSION`` of ``source``) at
    ``tree/lib/modules/VERSION``, renamed when ``move`` (an extracted .deb) else
    copied, and run ``depmod`` on it when modules.dep or modules.alias is missing.
    KernelImportError when depmod fails or leaves them missing."""
    target = tree / "lib" / "modules" / version
    target.parent.mkdir(parents=True)
    if move:
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


def find_kernel(source: Path, root: Path) -> tuple[Path, Path]:
    """The one ``boot/vmlinuz-VERSION`` under ``root`` and its ``lib/modules/VERSION``;
    KernelImportError (naming ``source``) for none or several."""
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


def check_bzimage(source: Path, vmlinuz: Path) -> None:
    """KernelImportError unless ``vmlinuz`` (of ``source``) is an x86 bzImage."""
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


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of the file ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
