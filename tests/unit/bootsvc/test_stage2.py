"""bootsvc.stage2 with a stand-in busybox file and a given applet list (no program run)."""

from __future__ import annotations

import gzip
import hashlib
import stat
import zlib
from pathlib import Path

import pytest

from bootsvc import newc, stage2
from bootsvc.errors import Stage2BuildError

INIT = "#!/bin/sh\nfor m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m; done\n"
APPLETS = ["sh", "insmod", "udhcpc", "mount"]


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, list[Path]]:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF stand-in")
    modules = []
    for name in ("virtio_ring.ko", "virtio.ko", "virtio_net.ko"):
        (tmp_path / name).write_bytes(name.encode() * 3)
        modules.append(tmp_path / name)
    return busybox, modules


def sha(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


def test_same_inputs_give_the_same_sha256(inputs: tuple[Path, list[Path]]) -> None:
    busybox, modules = inputs
    first = stage2.build(busybox, modules, INIT, applets=APPLETS)
    again = stage2.build(busybox, list(modules), INIT, applets=list(reversed(APPLETS)))
    assert sha(first) == sha(again)


@pytest.mark.parametrize("change", ["module", "init", "mtime", "order", "busybox"])
def test_a_changed_input_changes_the_sha256(inputs: tuple[Path, list[Path]], change: str) -> None:
    busybox, modules = inputs
    before = sha(stage2.build(busybox, modules, INIT, applets=APPLETS))
    init, mtime = INIT, 0
    if change == "module":
        modules[1].write_bytes(b"other")
    elif change == "init":
        init = INIT + "exec sh\n"
    elif change == "mtime":
        mtime = 1764000000
    elif change == "order":
        modules = modules[::-1]
    else:
        busybox.write_bytes(b"\x7fELF other")
    assert sha(stage2.build(busybox, modules, init, applets=APPLETS, mtime=mtime)) != before


def test_archive_holds_the_stage2_layout(inputs: tuple[Path, list[Path]]) -> None:
    busybox, modules = inputs
    image = stage2.build(busybox, modules, INIT, applets=APPLETS, mtime=5)
    assert image[:2] == b"\x1f\x8b" and image[4:8] == b"\0\0\0\0"  # gzip, header mtime 0
    members = {m.entry.path: m for m in newc.read(gzip.decompress(image))}
    expected_dirs = {"bin", "dev", "lib", "lib/modules", "proc", "sys"}
    assert {p for p, m in members.items() if stat.S_ISDIR(m.entry.mode)} == expected_dirs
    assert members["init"].entry.data == INIT.encode()
    assert stat.S_IMODE(members["init"].entry.mode) == 0o755
    assert members["bin/busybox"].entry.data == busybox.read_bytes()
    for applet in APPLETS:
        assert members[f"bin/{applet}"].entry.data == b"busybox"
        assert stat.S_ISLNK(members[f"bin/{applet}"].entry.mode)
    for module in modules:
        assert members[f"lib/modules/{module.name}"].entry.data == module.read_bytes()
    assert (
        members["lib/modules/load-order"].entry.data
        == b"virtio_ring.ko\nvirtio.ko\nvirtio_net.ko\n"
    )
    assert members["dev/console"].entry.rdev == (5, 1)
    assert {m.mtime for m in members.values()} == {5}


def test_init_without_shebang_is_refused(inputs: tuple[Path, list[Path]]) -> None:
    busybox, modules = inputs
    with pytest.raises(Stage2BuildError) as caught:
        stage2.build(busybox, modules, "echo hi\n", applets=APPLETS)
    assert caught.value.what == "init script"


def test_two_modules_with_one_name_are_refused(
    inputs: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    busybox, modules = inputs
    (tmp_path / "sub").mkdir()
    twin = tmp_path / "sub" / "virtio.ko"
    twin.write_bytes(b"x")
    with pytest.raises(Stage2BuildError) as caught:
        stage2.build(busybox, [*modules, twin], INIT, applets=APPLETS)
    assert caught.value.value == str(twin)


def test_missing_module_names_the_file(inputs: tuple[Path, list[Path]], tmp_path: Path) -> None:
    busybox, _ = inputs
    with pytest.raises(Stage2BuildError) as caught:
        stage2.build(busybox, [tmp_path / "gone.ko"], INIT, applets=APPLETS)
    assert caught.value.value == str(tmp_path / "gone.ko")


@pytest.mark.parametrize("applet", ["", "../x", "a/b"])
def test_bad_applet_name_is_refused(inputs: tuple[Path, list[Path]], applet: str) -> None:
    busybox, modules = inputs
    with pytest.raises(Stage2BuildError):
        stage2.build(busybox, modules, INIT, applets=[applet])


def test_unrunnable_busybox_is_reported(tmp_path: Path) -> None:
    with pytest.raises(Stage2BuildError) as caught:
        stage2.busybox_applets(tmp_path / "no-busybox")
    assert caught.value.what == "busybox"


@pytest.mark.parametrize(
    ("env", "expected"), [({}, 0), ({"SOURCE_DATE_EPOCH": "1700000000"}, 1700000000)]
)
def test_source_date_epoch(env: dict[str, str], expected: int) -> None:
    assert stage2.source_date_epoch(env) == expected


@pytest.mark.parametrize("value", ["-1", "soon", "99999999999"])
def test_bad_source_date_epoch_is_refused(value: str) -> None:
    with pytest.raises(Stage2BuildError) as caught:
        stage2.source_date_epoch({"SOURCE_DATE_EPOCH": value})
    assert caught.value.value == value


def test_write_returns_the_sha256_of_the_file(tmp_path: Path) -> None:
    out = tmp_path / "stage2.img"
    digest = stage2.write(out, b"image bytes")
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert not (tmp_path / "stage2.img.partial").exists()


def _gzip_members(data: bytes) -> list[bytes]:
    """The decompressed members of concatenated gzip streams, in order."""
    out = []
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out.append(d.decompress(data))
        data = d.unused_data
    return out


def test_the_baseline_is_stage3_then_stage2s_init_and_modules() -> None:
    s3_init = b"#!/bin/sh\necho stage three\n"
    stage3 = gzip.compress(
        newc.write([newc.regular("init", s3_init, 0o755), newc.symlink("lib", "usr/lib")]), mtime=0
    )
    s2_init = b"#!/bin/sh\necho stage two\n"
    stage2_image = gzip.compress(
        newc.write(
            [
                newc.regular("init", s2_init, 0o755),
                newc.directory("lib"),
                newc.directory("lib/modules"),
                newc.regular("lib/modules/virtio.ko", b"ko"),
                newc.regular("lib/modules/load-order", b"virtio.ko\n"),
                newc.regular("bin/busybox", b"bb", 0o755),
            ]
        )
    )
    packed = stage2.pack_baseline(stage2_image, stage3)
    first, second = _gzip_members(packed)
    assert first == gzip.decompress(stage3)  # stage 3 whole, first
    extra = {m.entry.path: m.entry for m in newc.read(second)}
    # Only files: a "lib" directory entry would replace stage 3's lib -> usr/lib symlink.
    assert sorted(extra) == [
        "init",
        "init.stage3",
        "lib/modules/load-order",
        "lib/modules/virtio.ko",
    ]
    assert extra["init"].data == s2_init  # stage 2's init runs first
    assert extra["init.stage3"].data == s3_init
    assert stat.S_IMODE(extra["init.stage3"].mode) == 0o755


def test_a_baseline_needs_images_with_an_init() -> None:
    no_init = gzip.compress(newc.write([newc.regular("etc/x", b"")]))
    with_init = gzip.compress(newc.write([newc.regular("init", b"#!/bin/sh\n", 0o755)]))
    with pytest.raises(Stage2BuildError, match=r"stage 3 image.*has no /init"):
        stage2.pack_baseline(with_init, no_init)
    with pytest.raises(Stage2BuildError, match="not a gzip newc archive"):
        stage2.pack_baseline(with_init, b"not gzip")
