"""The stage-2 initramfs: busybox, the NIC modules and an init script, reproducibly.

Same inputs give the same bytes: entries are sorted, owned by root, numbered
1, 2, ... and stamped with one time (0, or SOURCE_DATE_EPOCH); the gzip header
carries mtime 0 and no file name. Gzip rather than xz: Debian's kernels unpack
both, gzip is in the standard library's zlib with no options to get wrong (the
kernel's xz unpacker needs ``check=crc32``), it unpacks faster under TCG, and
for a ~1 MB stage 2 the size difference is small (see docs/boot.md).

Layout::

    /init                    the init script (0755)
    /bin/busybox             the static busybox (0755)
    /bin/APPLET -> busybox   one symlink per name of ``busybox --list``
    /lib/modules/NAME.ko     each module file, flat
    /lib/modules/load-order  their base names, one a line, in load order
    /dev/console             char 5:1, so init has a console before devtmpfs
    /proc /sys               empty mount points
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bootsvc import initscript, newc
from bootsvc.errors import Stage2BuildError
from bootsvc.modalias import ModuleIndex
from cachefs.atomicfile import write_atomic

MODULE_DIR = "lib/modules"
LOAD_ORDER = f"{MODULE_DIR}/load-order"
_DIRS = ("bin", "dev", "lib", MODULE_DIR, "proc", "sys")


def source_date_epoch(environ: Mapping[str, str]) -> int:
    """The archive time from ``SOURCE_DATE_EPOCH`` in ``environ``, or 0 when unset.

    Raises :class:`Stage2BuildError` when it is not a non-negative integer.
    """
    value = environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return 0
    if not value.isdigit() or int(value) > 0xFFFFFFFF:
        raise Stage2BuildError(
            "SOURCE_DATE_EPOCH", value, "must be seconds since 1970 (0 to 4294967295)"
        )
    return int(value)


def busybox_applets(busybox: Path) -> list[str]:
    """The applet names ``busybox --list`` prints, sorted.

    Raises :class:`Stage2BuildError` when it cannot be run.
    """
    try:
        done = subprocess.run([str(busybox), "--list"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Stage2BuildError(
            "busybox", str(busybox), f"'--list' failed ({exc}); give a static busybox"
        ) from exc
    return sorted(set(done.stdout.decode().split()))


def entries(
    busybox: bytes, modules: Sequence[Path], init_script: str, applets: Sequence[str]
) -> list[newc.Entry]:
    """The members of the stage-2 archive (unsorted; :func:`newc.write` sorts).

    ``modules`` are files in load order. Raises :class:`Stage2BuildError` for an
    init script without ``#!``, two modules with one base name, a bad applet
    name or an unreadable module.
    """
    if not init_script.startswith("#!"):
        raise Stage2BuildError(
            "init script", init_script[:40], "must start with '#!' (the kernel execs /init)"
        )
    members = [newc.directory(path) for path in _DIRS]
    members += [
        newc.regular("init", init_script.encode(), 0o755),
        newc.regular("bin/busybox", busybox, 0o755),
        newc.char_device("dev/console", 5, 1),
    ]
    for applet in sorted(set(applets) - {"busybox"}):
        if not applet or "/" in applet or applet in (".", ".."):
            raise Stage2BuildError("busybox applet", applet, "is not a plain file name")
        members.append(newc.symlink(f"bin/{applet}", "busybox"))
    names: list[str] = []
    for module in modules:
        if module.name in names or module.name == "load-order":
            raise Stage2BuildError(
                "module", str(module), "base name is taken; modules go flat in /lib/modules"
            )
        try:
            data = module.read_bytes()
        except OSError as exc:
            raise Stage2BuildError(
                "module", str(module), f"cannot be read ({exc.strerror})"
            ) from exc
        members.append(newc.regular(f"{MODULE_DIR}/{module.name}", data))
        names.append(module.name)
    members.append(newc.regular(LOAD_ORDER, "".join(f"{name}\n" for name in names).encode()))
    return members


def build(
    busybox: Path,
    modules: Sequence[Path],
    init_script: str,
    *,
    applets: Sequence[str] | None = None,
    mtime: int = 0,
) -> bytes:
    """The gzip-compressed newc initramfs of these inputs; same inputs, same bytes.

    ``applets`` defaults to what ``busybox --list`` prints. Raises
    :class:`Stage2BuildError` for unusable inputs.
    """
    try:
        binary = busybox.read_bytes()
    except OSError as exc:
        raise Stage2BuildError("busybox", str(busybox), f"cannot be read ({exc.strerror})") from exc
    names = busybox_applets(busybox) if applets is None else applets
    archive = newc.write(entries(binary, modules, init_script, names), mtime=mtime)
    return gzip.compress(archive, compresslevel=9, mtime=0)


def write(out: Path, image: bytes) -> str:
    """Write ``image`` to ``out`` (through a temporary file, then rename); return its sha256 hex."""
    write_atomic(out, image)
    return hashlib.sha256(image).hexdigest()


#: Modules stage 2 loads to mount a squashfs stage 3 under an overlay (bootsvc.squash).
ROOT_MODULES = ("loop", "squashfs", "overlay")

#: QEMU's virtio-net-pci with disable-legacy=on (launcher.cluster.qemu), the virtual nodes' NIC.
VIRTIO_NET_MODALIAS = "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"


def init_script() -> str:
    """The stage-2 ``/init`` shipped with Beolaunch (``bootsvc/stage2_init.sh``, whole)."""
    return initscript.shipped("stage2_init.sh")


def build_for_kernel(
    modules_dir: Path,
    modaliases: Sequence[str],
    busybox: Path,
    *,
    mtime: int = 0,
    progress: Callable[[str], None] = lambda _line: None,
) -> tuple[bytes, dict[str, Any]]:
    """Stage 2 for the kernel whose module tree is ``modules_dir`` and NICs ``modaliases``.

    Returns the image and its ``built_from`` record (kernel release, the modaliases,
    the modules chosen, busybox's and the init script's sha256). Raises
    Stage2BuildError when no module matches a network device among ``modaliases``
    (a stage 2 without its NIC driver could never reach the master), and
    ModuleIndexError for a module tree without ``modules.alias``/``modules.dep``.
    """
    index = ModuleIndex.from_dir(modules_dir)
    files = index.nic_modules(modaliases)
    nic_count = len(files)
    if not files:
        raise Stage2BuildError(
            "NIC modaliases",
            " ".join(modaliases) or "(none)",
            f"no module of {modules_dir} drives these; give the nodes' NIC modalias "
            "(lspci -n / /sys/bus/pci/devices/*/modalias), or a built-in driver's kernel",
        )
    progress(f"NIC modules ({len(files)}): {', '.join(Path(f).name for f in files)}")
    # What mounting a squashfs stage 3 needs (built in on some kernels: then not in the index).
    present = [name for name in ROOT_MODULES if name in index.deps]
    files += [f for f in index.load_order(present) if f not in files]
    progress(f"stage 3 mount modules ({len(files) - nic_count}): {', '.join(present)}")
    script = init_script()
    image = build(busybox, [modules_dir / f for f in files], script, mtime=mtime)
    progress(f"stage 2: {len(image)} bytes compressed")
    built_from = {
        "kernel_release": modules_dir.name,
        "modaliases": list(modaliases),
        "modules": [Path(f).name for f in files],
        "nic_modules": [Path(f).name for f in files[:nic_count]],
        "busybox_sha256": hashlib.sha256(busybox.read_bytes()).hexdigest(),
        "init_sha256": hashlib.sha256(script.encode()).hexdigest(),
        "mtime": mtime,
    }
    return image, built_from


def pack_baseline(stage2_image: bytes, stage3_image: bytes) -> bytes:
    """The benchmark's baseline: one large initramfs holding stage 3 and stage 2's init.

    Single-image systems (Warewulf's and others') boot one initramfs with the
    whole node root in it. The kernel unpacks concatenated compressed archives
    in order, later members replacing earlier ones, so this is stage 3 whole,
    then a small archive with stage 2's ``/init``, stage 3's ``/init`` as
    ``/init.stage3`` and stage 2's NIC modules with their load order. Stage 2's
    init runs on stage 3's busybox (merged ``/usr``: ``/bin`` and ``/lib`` are
    symlinks into ``/usr`` and must stay so) and starts ``/init.stage3`` after
    DHCP instead of fetching (stage2_init.sh). Raises Stage2BuildError when an
    image is not a gzip newc archive with ``/init``.
    """
    three = _members("stage 3 image", stage3_image)
    two = _members("stage 2 image", stage2_image)
    extra = [
        newc.regular("init", two["init"].data, 0o755),
        newc.regular("init.stage3", three["init"].data, 0o755),
    ]
    extra += [
        newc.regular(path, entry.data, entry.mode & 0o7777)
        for path, entry in sorted(two.items())
        if path.startswith(f"{MODULE_DIR}/") and entry.mode & 0o170000 == 0o100000
    ]
    return stage3_image + gzip.compress(newc.write(extra), compresslevel=9, mtime=0)


def _members(what: str, image: bytes) -> dict[str, newc.Entry]:
    """The entries of gzip newc ``image`` by path; it must have ``init``."""
    try:
        members = newc.read(gzip.decompress(image))
    except (OSError, EOFError, ValueError) as exc:
        raise Stage2BuildError(what, "(bytes)", f"not a gzip newc archive: {exc}") from exc
    found = {m.entry.path: m.entry for m in members}
    if "init" not in found:
        raise Stage2BuildError(what, "(bytes)", "has no /init")
    return found
