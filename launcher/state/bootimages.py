"""Boot images' rows: store, find, choose and delete ``boot_images`` rows.

An image is the file ``STATE/boot/images/SHA256`` (written by
:mod:`bootsvc.images`) plus a ``boot_images`` row (name, kind, sha256, size,
built_from). Rows live in the caller's session; the caller commits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bootsvc.errors import BootImageError
from bootsvc.images import image_path, images_dir, kernels_dir, place, staged
from launcher.errors import NotFoundError
from launcher.state.models import IMAGE_KINDS, BootAssignment, BootImage, Node


def kernel_modules_dir(state_dir: Path, kernel: BootImage) -> Path:
    """The ``lib/modules/VERSION`` directory imported with ``kernel`` (modules.alias,
    modules.dep, kernel/...). BootImageError for an image that is not an imported kernel."""
    found = kernel.built_from or {}
    modules, version = found.get("modules_dir"), found.get("version")
    if kernel.kind != "kernel" or not isinstance(modules, str) or not isinstance(version, str):
        raise BootImageError(
            kernel.name,
            "has no kernel module tree (not imported with 'beoctl boot import-kernel'); "
            "import the kernel's .deb or directory",
        )
    # Relative to the state dir, so the state dir can move.
    return state_dir / modules / version


def _text(image: BootImage | None, key: str) -> str | None:
    value = (image.built_from or {}).get(key) if image is not None else None
    return value if isinstance(value, str) else None


def kernel_release(image: BootImage | None) -> str | None:
    """The kernel release an image belongs to: a kernel's own version, or the
    release whose modules a stage 2 or stage 3 carries (None when not recorded)."""
    if image is not None and image.kind == "kernel":
        return _text(image, "version")
    return _text(image, "kernel_release")


def fits_kernel(image: BootImage, kernel: BootImage | None) -> bool:
    """Whether stage image ``image`` can boot under ``kernel``: its modules are
    that kernel's release (an image or kernel without a recorded release fits)."""
    want, have = kernel_release(kernel), kernel_release(image)
    return want is None or have is None or want == have


def _newest_first(session: Session, kind: str) -> list[BootImage]:
    return list(
        session.scalars(
            select(BootImage)
            .where(BootImage.kind == kind)
            .order_by(BootImage.created_at.desc(), BootImage.id.desc())
        )
    )


def chosen_images(session: Session, node: Node) -> dict[str, BootImage | None]:
    """Per kind, what ``node`` boots: the image assigned to it, else the newest.

    Stage 2 and stage 3 carry kernel modules, which load only into the kernel
    release they were built for: an unassigned stage is the newest one built
    for the chosen kernel's release, so importing a newer kernel never pairs it
    with an older kernel's stage 2 (the node would boot without a NIC driver).
    None where nothing fits; :func:`boot_problem` says why.
    """
    assigned = {
        a.kind: a.image
        for a in session.scalars(select(BootAssignment).where(BootAssignment.node_id == node.id))
    }
    kernel = assigned.get("kernel") or next(iter(_newest_first(session, "kernel")), None)
    chosen: dict[str, BootImage | None] = {"kernel": kernel}
    for kind in IMAGE_KINDS:
        if kind == "kernel":
            continue
        if kind in assigned:
            chosen[kind] = assigned[kind]
        else:
            fitting = (i for i in _newest_first(session, kind) if fits_kernel(i, kernel))
            chosen[kind] = next(fitting, None)
    return chosen


def boot_problem(session: Session, chosen: dict[str, BootImage | None]) -> str | None:
    """Why a node with these :func:`chosen_images` cannot boot, for its waiting
    script and the event log; None when it can."""
    kernel = chosen.get("kernel")
    release = kernel_release(kernel)
    missing = [kind for kind in IMAGE_KINDS if chosen.get(kind) is None]
    if missing:
        others = [k for k in missing if k != "kernel" and _newest_first(session, k)]
        if kernel is not None and release is not None and others:
            builds = " and ".join(f"beoctl boot build-{k} --kernel {kernel.name}" for k in others)
            return f"no {' or '.join(missing)} image built for kernel {release}: {builds}"
        return f"no {' or '.join(missing)} image"
    for kind in IMAGE_KINDS:
        image = chosen[kind]
        if kind != "kernel" and image is not None and not fits_kernel(image, kernel):
            assert kernel is not None
            return (
                f"{kind} {image.name} is built for kernel {kernel_release(image)}, "
                f"not {release} ({kernel.name}): assign a {kind} built for it"
            )
    return None


def store_image(
    session: Session,
    state_dir: Path,
    data: bytes | Path,
    *,
    kind: str,
    name: str,
    built_from: dict[str, Any],
) -> BootImage:
    """Store ``data`` (bytes, or a file read once in 1 MiB chunks) as image ``name``.

    The same bytes under the same name (and kind) again: returns the existing row,
    changes nothing. Raises BootImageError for an unknown kind, an empty name, a
    name already used for other bytes, or bytes already stored under another name.
    The row is added to ``session`` and flushed; if that fails, a file this call
    created is removed (except on an IntegrityError: a concurrent writer's row may
    name it). An existing file with the same name and size is reused.
    """
    if kind not in IMAGE_KINDS:
        raise BootImageError(name, f"kind {kind!r} is not one of {', '.join(IMAGE_KINDS)}")
    if not name or len(name) > 128 or any(c.isspace() for c in name) or "/" in name:
        raise BootImageError(
            repr(name), "bad name: give 1-128 characters without spaces or '/' (--name)"
        )
    directory = images_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with staged(directory, data) as (tmp, sha256, size):
        existing = check_clash(session, name, kind, sha256)
        if existing is not None:
            return existing
        final = directory / sha256
        created = place(tmp, final, size)
        try:
            image = BootImage(name=name, kind=kind, sha256=sha256, size=size, built_from=built_from)
            session.add(image)
            session.flush()
        except IntegrityError:
            # Another writer stored the same name or bytes since check_clash (possible on
            # PostgreSQL): its row may name this very file, so it stays (an orphan file
            # is harmless; the next store of these bytes reuses it).
            raise
        except BaseException:
            if created:
                final.unlink(missing_ok=True)
            raise
        return image


def check_clash(session: Session, name: str, kind: str, sha256: str) -> BootImage | None:
    """The existing row for exactly these bytes+name+kind, None for a new image;
    BootImageError for a name used by other bytes or bytes stored under another name."""
    by_name = session.scalars(select(BootImage).where(BootImage.name == name)).first()
    if by_name is not None:
        if by_name.sha256 == sha256 and by_name.kind == kind:
            return by_name
        if by_name.sha256 == sha256:
            raise BootImageError(
                name, f"already stored as a {by_name.kind} image, not {kind}; check the file"
            )
        raise BootImageError(
            name,
            f"the name is already used by other bytes (sha256 {by_name.sha256[:12]}); "
            "pick another --name, or 'beoctl boot remove' the old image first",
        )
    by_sha = session.scalars(select(BootImage).where(BootImage.sha256 == sha256)).first()
    if by_sha is not None:
        raise BootImageError(
            name,
            f"the same bytes (sha256 {sha256[:12]}) are already the {by_sha.kind} image "
            f"{by_sha.name!r}; use that name, or remove it first",
        )
    return None


def find_image(session: Session, ref: str) -> BootImage:
    """The image named ``ref``, else the one image whose sha256 starts with ``ref``
    (at least 4 hex digits). NotFoundError when none matches, BootImageError when
    several do."""
    image = session.scalars(select(BootImage).where(BootImage.name == ref)).first()
    if image is not None:
        return image
    prefix = ref.lower()
    if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
        found = list(
            session.scalars(
                select(BootImage)
                .where(BootImage.sha256.startswith(prefix))
                .order_by(BootImage.name)
            )
        )
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(i.name for i in found)
            raise BootImageError(
                ref, f"the sha256 prefix matches several images ({names}); give more digits"
            )
    raise NotFoundError(
        f"no boot image named {ref!r} (or with a sha256 starting so); "
        "'beoctl boot images' lists them"
    )


def assigned_nodes(session: Session, image: BootImage) -> list[str]:
    """Names (or ``#id``) of the nodes assigned to ``image``, sorted."""
    nodes = session.scalars(
        select(Node).join(BootAssignment).where(BootAssignment.image_id == image.id)
    )
    return sorted(n.name or f"#{n.id}" for n in nodes)


def delete_image(session: Session, state_dir: Path, image: BootImage, *, force: bool) -> list[Path]:
    """Delete ``image``'s row (and, with ``force``, its nodes' assignments to it).

    Returns the paths to remove once the transaction has committed (its file, and
    for an imported kernel its module tree unless another kernel row still uses it).
    BootImageError while a node is assigned to it and ``force`` is false.
    """
    nodes = assigned_nodes(session, image)
    if nodes and not force:
        shown = ", ".join(nodes[:10]) + (", ..." if len(nodes) > 10 else "")
        raise BootImageError(
            image.name,
            f"assigned to {len(nodes)} node(s) ({shown}); 'beoctl boot assign NODE --default "
            f"{image.kind}' first, or remove with --force",
        )
    for assignment in session.scalars(
        select(BootAssignment).where(BootAssignment.image_id == image.id)
    ):
        session.delete(assignment)
    session.delete(image)
    session.flush()
    paths = [image_path(state_dir, image.sha256)]
    modules = (image.built_from or {}).get("modules_dir")
    if image.kind == "kernel" and isinstance(modules, str):
        still_used = any(
            (k.built_from or {}).get("modules_dir") == modules
            for k in session.scalars(select(BootImage).where(BootImage.kind == "kernel"))
        )
        # modules_dir is boot/kernels/VERSION/lib/modules: the tree is its grandparent.
        tree = (state_dir / modules).parent.parent
        if not still_used and tree.parent == kernels_dir(state_dir):
            paths.append(tree)
    return paths
