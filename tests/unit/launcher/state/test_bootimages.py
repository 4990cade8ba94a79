"""launcher.state.bootimages (and bootsvc.images) on a real state database (SQLite and
PostgreSQL) and a temp state dir."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from bootsvc.errors import BootImageError
from bootsvc.images import CHUNK, image_path, images_dir, kernels_dir, remove_paths
from launcher.errors import NotFoundError
from launcher.state.bootimages import (
    boot_problem,
    chosen_images,
    delete_image,
    find_image,
    kernel_modules_dir,
    store_image,
)
from launcher.state.db import transaction
from launcher.state.models import BootAssignment, BootImage
from launcher.state.nodes import add_node

INSERT_FAILS = (StatementError, TypeError)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stray_files(state_dir: Path) -> list[str]:
    """Temp files left in the images dir."""
    return sorted(p.name for p in images_dir(state_dir).iterdir() if p.name.startswith("."))


def count_images(engine: Engine) -> int:
    with transaction(engine, readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(BootImage)) or 0)


def test_layout(state_dir: Path) -> None:
    assert images_dir(state_dir) == state_dir / "boot" / "images"
    assert kernels_dir(state_dir) == state_dir / "boot" / "kernels"
    assert image_path(state_dir, "a" * 64) == state_dir / "boot" / "images" / ("a" * 64)
    with pytest.raises(BootImageError, match="64 lowercase hex"):
        image_path(state_dir, "../etc/passwd")


def test_store_bytes_writes_the_file_and_the_row(engine: Engine, state_dir: Path) -> None:
    data = b"stage two bytes"
    with transaction(engine) as s:
        image = store_image(
            s, state_dir, data, kind="stage2", name="s2-a", built_from={"busybox": "1.35"}
        )
    path = image_path(state_dir, sha(data))
    assert path.read_bytes() == data
    assert path.stat().st_mode & 0o777 == 0o644
    assert (image.name, image.kind, image.sha256, image.size) == ("s2-a", "stage2", sha(data), 15)
    with transaction(engine, readonly=True) as s:
        row = s.scalars(select(BootImage)).one()
        assert row.built_from == {"busybox": "1.35"}
        assert row.created_at.tzinfo is not None
    assert stray_files(state_dir) == []


def test_same_bytes_same_name_is_a_no_op(engine: Engine, state_dir: Path) -> None:
    data = b"k" * 100
    with transaction(engine) as s:
        first = store_image(s, state_dir, data, kind="kernel", name="k1", built_from={})
    inode = image_path(state_dir, sha(data)).stat().st_ino
    with transaction(engine) as s:
        again = store_image(s, state_dir, data, kind="kernel", name="k1", built_from={"x": 1})
        assert again.id == first.id
        assert again.built_from == {}
    assert count_images(engine) == 1
    assert image_path(state_dir, sha(data)).stat().st_ino == inode
    assert stray_files(state_dir) == []


def test_store_from_a_path_streams_in_chunks(
    engine: Engine, state_dir: Path, tmp_path: Path
) -> None:
    data = os.urandom(3 * CHUNK + 17)
    src = tmp_path / "stage3.cpio.gz"
    src.write_bytes(data)
    with transaction(engine) as s:
        image = store_image(s, state_dir, src, kind="stage3", name="s3", built_from={})
    assert image.sha256 == sha(data)
    assert image.size == len(data)
    assert image_path(state_dir, sha(data)).read_bytes() == data


def test_unreadable_path_is_refused_naming_it(engine: Engine, state_dir: Path) -> None:
    missing = state_dir / "nope.img"
    with transaction(engine) as s, pytest.raises(BootImageError, match=r"nope\.img: cannot read"):
        store_image(s, state_dir, missing, kind="stage3", name="s3", built_from={})
    assert stray_files(state_dir) == []


def test_name_used_by_other_bytes_is_refused(engine: Engine, state_dir: Path) -> None:
    with transaction(engine) as s:
        store_image(s, state_dir, b"one", kind="stage3", name="s3", built_from={})
    with (
        transaction(engine) as s,
        pytest.raises(BootImageError, match=r"s3: the name is already used.*pick another --name"),
    ):
        store_image(s, state_dir, b"two", kind="stage3", name="s3", built_from={})
    assert not image_path(state_dir, sha(b"two")).exists()
    assert image_path(state_dir, sha(b"one")).read_bytes() == b"one"
    assert stray_files(state_dir) == []
    assert count_images(engine) == 1


def test_same_bytes_under_another_name_or_kind_is_refused(engine: Engine, state_dir: Path) -> None:
    with transaction(engine) as s:
        store_image(s, state_dir, b"one", kind="stage3", name="s3", built_from={})
    with transaction(engine) as s, pytest.raises(BootImageError, match="already the stage3 image"):
        store_image(s, state_dir, b"one", kind="stage3", name="s3-again", built_from={})
    with transaction(engine) as s, pytest.raises(BootImageError, match="not stage2"):
        store_image(s, state_dir, b"one", kind="stage2", name="s3", built_from={})
    assert image_path(state_dir, sha(b"one")).exists()


@pytest.mark.parametrize(
    ("kind", "name", "match"),
    [("initrd", "x", "kind 'initrd' is not one of"), ("kernel", "a b", "bad name")],
)
def test_bad_kind_or_name_is_refused(
    engine: Engine, state_dir: Path, kind: str, name: str, match: str
) -> None:
    with transaction(engine) as s, pytest.raises(BootImageError, match=match):
        store_image(s, state_dir, b"x", kind=kind, name=name, built_from={})


def test_failed_insert_removes_the_file_it_created(engine: Engine, state_dir: Path) -> None:
    # built_from that is not JSON fails in the INSERT itself (session.flush): a
    # StatementError on SQLite, psycopg's TypeError on PostgreSQL.
    with transaction(engine) as s, pytest.raises(INSERT_FAILS):
        store_image(s, state_dir, b"doomed", kind="stage2", name="d", built_from={"x": object()})
    assert not image_path(state_dir, sha(b"doomed")).exists()
    assert stray_files(state_dir) == []
    assert count_images(engine) == 0


def test_failed_insert_keeps_an_identical_file_it_found(engine: Engine, state_dir: Path) -> None:
    images_dir(state_dir).mkdir(parents=True)
    there = image_path(state_dir, sha(b"kept"))
    there.write_bytes(b"kept")
    inode = there.stat().st_ino
    with transaction(engine) as s, pytest.raises(INSERT_FAILS):
        store_image(s, state_dir, b"kept", kind="stage2", name="d", built_from={"x": object()})
    assert there.stat().st_ino == inode  # reused, not replaced, and not removed
    with transaction(engine) as s:
        store_image(s, state_dir, b"kept", kind="stage2", name="d", built_from={})
    assert there.stat().st_ino == inode


def test_a_truncated_file_is_replaced(engine: Engine, state_dir: Path) -> None:
    images_dir(state_dir).mkdir(parents=True)
    there = image_path(state_dir, sha(b"whole file"))
    there.write_bytes(b"whole")
    with transaction(engine) as s:
        store_image(s, state_dir, b"whole file", kind="stage2", name="w", built_from={})
    assert there.read_bytes() == b"whole file"


def _at(image: BootImage, day: int) -> None:
    image.created_at = datetime(2026, 1, day, tzinfo=UTC)


def test_chosen_images_default_to_the_newest_of_each_kind(engine: Engine, state_dir: Path) -> None:
    with transaction(engine) as s:
        node = add_node(s, "n1")
        assert chosen_images(s, node) == {"kernel": None, "stage2": None, "stage3": None}
        newer = store_image(s, state_dir, b"k-new", kind="kernel", name="k-new", built_from={})
        older = store_image(s, state_dir, b"k-old", kind="kernel", name="k-old", built_from={})
        s3 = store_image(s, state_dir, b"s3", kind="stage3", name="s3", built_from={})
        # The older one was stored last: newest means created_at, not insertion order.
        _at(newer, 2)
        _at(older, 1)
        s.flush()
        chosen = chosen_images(s, node)
        assert chosen["kernel"] is newer
        assert chosen["stage2"] is None
        assert chosen["stage3"] is s3

        s.add(BootAssignment(node_id=node.id, kind="kernel", image_id=older.id))
        s.flush()
        assert chosen_images(s, node)["kernel"] is older
        other = add_node(s, "n2")
        assert chosen_images(s, other)["kernel"] is newer


def _kernel(s: Session, state_dir: Path, name: str, version: str, day: int) -> BootImage:
    image = store_image(
        s, state_dir, name.encode(), kind="kernel", name=name, built_from={"version": version}
    )
    _at(image, day)
    return image


def _stage(s: Session, state_dir: Path, kind: str, name: str, release: str, day: int) -> BootImage:
    built = {"kernel_release": release}
    image = store_image(s, state_dir, name.encode(), kind=kind, name=name, built_from=built)
    _at(image, day)
    return image


def test_stages_default_to_the_newest_built_for_the_chosen_kernel(
    engine: Engine, state_dir: Path
) -> None:
    with transaction(engine) as s:
        node = add_node(s, "n1")
        old = _kernel(s, state_dir, "k-old", "6.1.0-1-amd64", 1)
        s2_old = _stage(s, state_dir, "stage2", "s2-old", "6.1.0-1-amd64", 2)
        s3_old = _stage(s, state_dir, "stage3", "s3-old", "6.1.0-1-amd64", 2)
        s.flush()
        assert chosen_images(s, node) == {"kernel": old, "stage2": s2_old, "stage3": s3_old}
        assert boot_problem(s, chosen_images(s, node)) is None

        # A newer kernel imported, its stages not built yet: the node waits, told
        # what to build, rather than booting the new kernel with the old modules.
        new = _kernel(s, state_dir, "k-new", "6.1.0-2-amd64", 3)
        s.flush()
        chosen = chosen_images(s, node)
        assert chosen == {"kernel": new, "stage2": None, "stage3": None}
        assert boot_problem(s, chosen) == (
            "no stage2 or stage3 image built for kernel 6.1.0-2-amd64: "
            "beoctl boot build-stage2 --kernel k-new and beoctl boot build-stage3 --kernel k-new"
        )
        # A node kept on the old kernel still gets the old kernel's stages.
        other = add_node(s, "n2")
        s.add(BootAssignment(node_id=other.id, kind="kernel", image_id=old.id))
        s.flush()
        assert chosen_images(s, other) == {"kernel": old, "stage2": s2_old, "stage3": s3_old}

        s2_new = _stage(s, state_dir, "stage2", "s2-new", "6.1.0-2-amd64", 4)
        s3_new = _stage(s, state_dir, "stage3", "s3-new", "6.1.0-2-amd64", 4)
        # Newer still but for the old kernel: not what the new kernel boots.
        _stage(s, state_dir, "stage2", "s2-old-rebuilt", "6.1.0-1-amd64", 5)
        s.flush()
        assert chosen_images(s, node) == {"kernel": new, "stage2": s2_new, "stage3": s3_new}
        assert chosen_images(s, other)["stage2"].name == "s2-old-rebuilt"  # type: ignore[union-attr]


def test_an_assigned_stage_of_another_kernel_is_a_problem(engine: Engine, state_dir: Path) -> None:
    with transaction(engine) as s:
        node = add_node(s, "n1")
        _kernel(s, state_dir, "k-old", "6.1.0-1-amd64", 1)
        old_s2 = _stage(s, state_dir, "stage2", "s2-old", "6.1.0-1-amd64", 1)
        _kernel(s, state_dir, "k-new", "6.1.0-2-amd64", 2)
        _stage(s, state_dir, "stage2", "s2-new", "6.1.0-2-amd64", 2)
        _stage(s, state_dir, "stage3", "s3-any", "6.1.0-2-amd64", 2)
        s.add(BootAssignment(node_id=node.id, kind="stage2", image_id=old_s2.id))
        s.flush()
        chosen = chosen_images(s, node)
        assert chosen["stage2"] is old_s2  # the admin's choice stands...
        assert boot_problem(s, chosen) == (  # ...and the node is told why it waits
            "stage2 s2-old is built for kernel 6.1.0-1-amd64, not 6.1.0-2-amd64 (k-new): "
            "assign a stage2 built for it"
        )


def test_images_without_a_recorded_release_fit_any_kernel(engine: Engine, state_dir: Path) -> None:
    with transaction(engine) as s:
        node = add_node(s, "n1")
        kernel = _kernel(s, state_dir, "k", "6.1.0-2-amd64", 1)
        s2 = store_image(s, state_dir, b"2", kind="stage2", name="s2", built_from={})
        s.flush()
        chosen = chosen_images(s, node)
        assert (chosen["kernel"], chosen["stage2"], chosen["stage3"]) == (kernel, s2, None)
        assert boot_problem(s, chosen) == "no stage3 image"


def test_kernel_modules_dir(engine: Engine, state_dir: Path) -> None:
    built = {"version": "6.1.0-56-amd64", "modules_dir": "boot/kernels/6.1.0-56-amd64/lib/modules"}
    with transaction(engine) as s:
        kernel = store_image(s, state_dir, b"k", kind="kernel", name="k", built_from=built)
        stage2 = store_image(s, state_dir, b"2", kind="stage2", name="s2", built_from={})
        assert kernel_modules_dir(state_dir, kernel) == (
            state_dir / "boot/kernels/6.1.0-56-amd64/lib/modules/6.1.0-56-amd64"
        )
        with pytest.raises(BootImageError, match="s2: has no kernel module tree"):
            kernel_modules_dir(state_dir, stage2)


def test_find_image_by_name_or_unique_prefix(engine: Engine, state_dir: Path) -> None:
    with transaction(engine) as s:
        a = store_image(s, state_dir, b"a", kind="stage2", name="a", built_from={})
        assert find_image(s, "a") is a
        assert find_image(s, a.sha256[:8]) is a
        assert find_image(s, a.sha256.upper()[:8]) is a
        with pytest.raises(NotFoundError, match="no boot image named 'zzz'"):
            find_image(s, "zzz")
        with pytest.raises(NotFoundError):
            find_image(s, a.sha256[:3])  # too short to be a prefix


def test_find_image_refuses_an_ambiguous_prefix(engine: Engine, state_dir: Path) -> None:
    # Find two payloads whose sha256 share the first 4 hex digits.
    seen: dict[str, bytes] = {}
    i = 0
    while True:
        data = str(i).encode()
        head = sha(data)[:4]
        if head in seen:
            break
        seen[head] = data
        i += 1
    with transaction(engine) as s:
        store_image(s, state_dir, seen[head], kind="stage2", name="p1", built_from={})
        store_image(s, state_dir, data, kind="stage2", name="p2", built_from={})
        with pytest.raises(BootImageError, match=r"matches several images \(p1, p2\)"):
            find_image(s, head)


def test_delete_refused_while_assigned_then_forced(engine: Engine, state_dir: Path) -> None:
    with transaction(engine) as s:
        node = add_node(s, "n1")
        img = store_image(s, state_dir, b"s3", kind="stage3", name="s3", built_from={})
        s.add(BootAssignment(node_id=node.id, kind="stage3", image_id=img.id))
    with transaction(engine) as s:
        img = find_image(s, "s3")
        with pytest.raises(BootImageError, match=r"s3: assigned to 1 node\(s\) \(n1\)"):
            delete_image(s, state_dir, img, force=False)
    with transaction(engine) as s:
        paths = delete_image(s, state_dir, find_image(s, "s3"), force=True)
    assert paths == [image_path(state_dir, sha(b"s3"))]
    assert paths[0].exists()  # removed by the caller after the commit
    remove_paths(paths)
    assert not paths[0].exists()
    with transaction(engine, readonly=True) as s:
        assert s.scalars(select(BootAssignment)).all() == []
    assert count_images(engine) == 0
