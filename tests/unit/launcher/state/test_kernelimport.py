"""launcher.state.kernelimport (and bootsvc.kernel) on small stand-in kernel trees (a fake
bzImage header, the real depmod).

The real Debian .deb is imported by tests/integration/test_boot_images_cli.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from bootsvc.errors import BootImageError, KernelImportError
from bootsvc.images import image_path, kernels_dir
from bootsvc.kernel import BZIMAGE_MAGIC, BZIMAGE_MAGIC_OFFSET, DEPMOD
from launcher.state.bootimages import store_image
from launcher.state.db import transaction
from launcher.state.kernelimport import import_kernel
from launcher.state.models import BootImage

VERSION = "9.9.9-test"

needs_depmod = pytest.mark.skipif(
    shutil.which(DEPMOD) is None, reason=f"{DEPMOD} missing: install kmod (make apt)"
)


def fake_bzimage(tag: bytes = b"") -> bytes:
    head = bytearray(1024)
    head[BZIMAGE_MAGIC_OFFSET : BZIMAGE_MAGIC_OFFSET + 4] = BZIMAGE_MAGIC
    return bytes(head) + tag


def kernel_tree(root: Path, *, vmlinuz: bytes | None = None, indexes: bool = True) -> Path:
    """ROOT/boot/vmlinuz-VERSION and ROOT/lib/modules/VERSION (with or without depmod's
    index files)."""
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{VERSION}").write_bytes(
        fake_bzimage() if vmlinuz is None else vmlinuz
    )
    modules = root / "lib" / "modules" / VERSION
    (modules / "kernel" / "fs").mkdir(parents=True)
    (modules / "kernel" / "fs" / "stand-in.txt").write_text("not a module\n")
    if indexes:
        (modules / "modules.dep").write_text("")
        (modules / "modules.alias").write_text("# Aliases extracted from modules themselves.\n")
    return root


def leftovers(state_dir: Path) -> list[str]:
    """What an import left under STATE/boot/kernels and in the images dir."""
    kernels = kernels_dir(state_dir)
    found = sorted(p.name for p in kernels.iterdir()) if kernels.exists() else []
    images = state_dir / "boot" / "images"
    found += sorted(f"images/{p.name}" for p in images.iterdir()) if images.exists() else []
    return found


def test_directory_import_keeps_modules_and_registers_vmlinuz(
    engine: Engine, state_dir: Path, tmp_path: Path
) -> None:
    src = kernel_tree(tmp_path / "src")
    steps: list[str] = []
    with transaction(engine) as s:
        done = import_kernel(s, state_dir, src, progress=steps.append)
    assert done.new
    assert done.version == VERSION
    assert done.image.name == f"linux-{VERSION}"
    assert done.image.kind == "kernel"
    assert done.image.built_from == {
        "version": VERSION,
        "source": {"dir": str(src.resolve())},
        "modules_dir": f"boot/kernels/{VERSION}/lib/modules",
    }
    assert done.modules_dir == kernels_dir(state_dir) / VERSION / "lib" / "modules" / VERSION
    assert (done.modules_dir / "kernel" / "fs" / "stand-in.txt").is_file()
    assert image_path(state_dir, done.image.sha256).read_bytes() == fake_bzimage()
    assert any(step.startswith("copying") for step in steps)
    assert not any("depmod" in step for step in steps)  # the indexes were there
    assert leftovers(state_dir) == [VERSION, f"images/{done.image.sha256}"]


def test_same_kernel_again_changes_nothing(engine: Engine, state_dir: Path, tmp_path: Path) -> None:
    src = kernel_tree(tmp_path / "src")
    with transaction(engine) as s:
        first = import_kernel(s, state_dir, src)
    steps: list[str] = []
    with transaction(engine) as s:
        again = import_kernel(s, state_dir, src, progress=steps.append)
    assert not again.new
    assert again.image.id == first.image.id
    assert not any(step.startswith("copying") for step in steps)


@needs_depmod
def test_missing_indexes_are_made_by_depmod(
    engine: Engine, state_dir: Path, tmp_path: Path
) -> None:
    src = kernel_tree(tmp_path / "src", indexes=False)
    steps: list[str] = []
    with transaction(engine) as s:
        done = import_kernel(s, state_dir, src, name="k", progress=steps.append)
    assert (done.modules_dir / "modules.dep").is_file()
    assert (done.modules_dir / "modules.alias").is_file()
    assert f"running depmod for {VERSION}" in steps
    assert not (src / "lib" / "modules" / VERSION / "modules.dep").exists()  # source untouched


def test_failing_depmod_keeps_nothing(engine: Engine, state_dir: Path, tmp_path: Path) -> None:
    src = kernel_tree(tmp_path / "src", indexes=False)
    with (
        transaction(engine) as s,
        pytest.raises(KernelImportError, match=r"depmod failed \(exit status 1\)"),
    ):
        import_kernel(s, state_dir, src, depmod="/bin/false")
    assert leftovers(state_dir) == []


def test_not_a_bzimage_is_refused(engine: Engine, state_dir: Path, tmp_path: Path) -> None:
    src = kernel_tree(tmp_path / "src", vmlinuz=b"\x7fELF" + bytes(2000))
    with (
        transaction(engine) as s,
        pytest.raises(KernelImportError, match=f"vmlinuz-{VERSION} is not an x86 bzImage"),
    ):
        import_kernel(s, state_dir, src)
    assert leftovers(state_dir) == []


def test_missing_modules_dir_is_refused(engine: Engine, state_dir: Path, tmp_path: Path) -> None:
    src = kernel_tree(tmp_path / "src")
    shutil.rmtree(src / "lib")
    with (
        transaction(engine) as s,
        pytest.raises(KernelImportError, match="with a matching lib/modules/VERSION not found"),
    ):
        import_kernel(s, state_dir, src)
    assert leftovers(state_dir) == []


def test_not_a_deb_or_dir_is_refused(engine: Engine, state_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "vmlinuz"
    plain.write_bytes(fake_bzimage())
    with transaction(engine) as s, pytest.raises(KernelImportError, match="not a linux-image"):
        import_kernel(s, state_dir, plain)
    bogus = tmp_path / "linux-image-bogus.deb"
    bogus.write_text("not an ar archive\n")
    with transaction(engine) as s, pytest.raises(KernelImportError, match="dpkg-deb -x failed"):
        import_kernel(s, state_dir, bogus)
    assert leftovers(state_dir) == []


def test_same_version_other_bytes_is_refused(
    engine: Engine, state_dir: Path, tmp_path: Path
) -> None:
    with transaction(engine) as s:
        first = import_kernel(s, state_dir, kernel_tree(tmp_path / "a"))
    rebuilt = kernel_tree(tmp_path / "b", vmlinuz=fake_bzimage(b"rebuilt"))
    with (
        transaction(engine) as s,
        pytest.raises(KernelImportError, match=f"already imported as image 'linux-{VERSION}'"),
    ):
        import_kernel(s, state_dir, rebuilt, name="other")
    assert leftovers(state_dir) == [VERSION, f"images/{first.image.sha256}"]


def test_name_clash_removes_the_tree_it_placed(
    engine: Engine, state_dir: Path, tmp_path: Path
) -> None:
    with transaction(engine) as s:
        taken = store_image(s, state_dir, b"s2", kind="stage2", name="taken", built_from={})
    with transaction(engine) as s, pytest.raises(BootImageError, match="taken: the name"):
        import_kernel(s, state_dir, kernel_tree(tmp_path / "src"), name="taken")
    assert leftovers(state_dir) == [f"images/{taken.sha256}"]


def test_a_tree_left_without_a_row_is_replaced(
    engine: Engine, state_dir: Path, tmp_path: Path
) -> None:
    stale = kernels_dir(state_dir) / VERSION / "lib" / "modules" / VERSION
    stale.mkdir(parents=True)
    (stale / "stale").write_text("from an import that never committed\n")
    with transaction(engine) as s:
        done = import_kernel(s, state_dir, kernel_tree(tmp_path / "src"))
    assert not (done.modules_dir / "stale").exists()
    assert (done.modules_dir / "modules.dep").is_file()
    with transaction(engine, readonly=True) as s:
        assert [i.name for i in s.scalars(select(BootImage))] == [f"linux-{VERSION}"]
