"""bootsvc.stage2 with the real static busybox (busybox-static) and the real cpio program."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from bootsvc import stage2

INIT = "#!/bin/sh\nmount -t proc proc /proc\nexec sh\n"
MODULES = ("virtio_ring.ko", "virtio.ko", "virtio_pci.ko", "virtio_net.ko")


def required(program: str, package: str) -> str:
    # A missing part fails rather than skips: `make test` installs it.
    found = shutil.which(program)
    if found is None:
        pytest.fail(f"{program} not found: apt-get install {package}")
    return found


@pytest.fixture
def busybox() -> Path:
    return Path(required("busybox", "busybox-static"))


@pytest.fixture
def modules(tmp_path: Path) -> list[Path]:
    # Stand-ins: the archive does not look inside module files.
    paths = []
    for name in MODULES:
        (tmp_path / name).write_bytes(name.encode() * 1000)
        paths.append(tmp_path / name)
    return paths


def test_two_builds_with_real_busybox_are_identical(busybox: Path, modules: list[Path]) -> None:
    first = stage2.build(busybox, modules, INIT)
    second = stage2.build(busybox, modules, INIT)
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    # gzip -9 of the archive is smaller than the busybox binary it holds.
    assert len(first) < busybox.stat().st_size


def test_cpio_lists_busybox_applets_modules_and_init(busybox: Path, modules: list[Path]) -> None:
    cpio = required("cpio", "cpio")
    applets = stage2.busybox_applets(busybox)
    assert {"sh", "insmod", "udhcpc", "mount"} <= set(applets)
    raw = gzip.decompress(stage2.build(busybox, modules, INIT))
    listed = subprocess.run(
        [cpio, "-t", "--quiet"], input=raw, capture_output=True, check=True
    ).stdout.decode()
    names = listed.split()
    assert names == sorted(names)
    expected = {"init", "bin/busybox", "dev/console", "proc", "sys", "lib/modules/load-order"}
    expected |= {f"bin/{applet}" for applet in applets}
    expected |= {f"lib/modules/{name}" for name in MODULES}
    assert set(names) == expected | {"bin", "dev", "lib", "lib/modules"}


def test_cpio_extracts_what_was_put_in(busybox: Path, modules: list[Path], tmp_path: Path) -> None:
    cpio = required("cpio", "cpio")
    raw = gzip.decompress(stage2.build(busybox, modules, INIT))
    root = tmp_path / "root"
    root.mkdir()
    # No device nodes without root: extract everything but dev/console.
    subprocess.run(
        [cpio, "-i", "--quiet", "--no-absolute-filenames", "-f", "dev/console"],
        input=raw,
        cwd=root,
        check=True,
    )
    assert (root / "bin" / "busybox").read_bytes() == busybox.read_bytes()
    assert (root / "bin" / "sh").readlink() == Path("busybox")
    assert (root / "init").read_text() == INIT
    assert (root / "lib" / "modules" / "load-order").read_text().split() == list(MODULES)
    ran = subprocess.run([root / "bin" / "sh", "-c", "echo ok"], capture_output=True, check=True)
    assert ran.stdout == b"ok\n"
