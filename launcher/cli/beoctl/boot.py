"""``beoctl boot``: boot images (kernels, stage 2, stage 3) and which node boots which."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, select

from bootsvc.errors import BootImageError
from bootsvc.images import remove_paths
from launcher.cli.beoctl.bootstage2 import build_stage2
from launcher.cli.beoctl.bootstage3 import build_stage3
from launcher.cli.context import CliContext, pass_cli
from launcher.cli.output import emit, format_options
from launcher.state.bootimages import (
    assigned_nodes,
    boot_problem,
    chosen_images,
    delete_image,
    find_image,
)
from launcher.state.db import transaction
from launcher.state.kernelimport import import_kernel
from launcher.state.models import IMAGE_KINDS, BootAssignment, BootImage
from launcher.state.nodes import get_node

IMAGE_COLUMNS = ("name", "kind", "sha256", "size", "created", "built_from", "nodes")


@click.group()
def boot() -> None:
    """Boot images: kernels, stage 2, stage 3, and which node boots which."""


@boot.command(name="import-kernel")
@click.argument("source", metavar="DEB_OR_DIR", type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="Image name (default: linux-VERSION).")
@pass_cli
def import_kernel_(cli: CliContext, source: Path, name: str | None) -> None:
    """Import a kernel from a linux-image .deb, or from a directory holding
    boot/vmlinuz-VERSION and lib/modules/VERSION."""
    state_dir = cli.config().state_dir

    def progress(step: str) -> None:
        click.echo(f"{step} ...", err=True)

    with transaction(cli.engine()) as session:
        done = import_kernel(session, state_dir, source, name=name, progress=progress)
        image = done.image
        line = (
            f"imported kernel {done.version} as image {image.name} "
            f"(sha256 {image.sha256[:12]}, {image.size} bytes); modules in {done.modules_dir}"
            if done.new
            else f"kernel {done.version} is already image {image.name}; nothing changed"
        )
    click.echo(line)


def _summary(built_from: dict[str, Any] | None) -> str:
    """One short cell for a table: the kernel version and where it came from, or key=value."""
    if not built_from:
        return "-"
    parts = []
    if "version" in built_from:
        parts.append(str(built_from["version"]))
    source = built_from.get("source")
    if isinstance(source, dict):
        parts.append(str(source.get("deb") or source.get("dir") or ""))
    elif source is not None:
        parts.append(str(source))
    for key, value in built_from.items():
        if key not in ("version", "source", "modules_dir") and isinstance(value, str | int):
            parts.append(f"{key}={value}")
    return " ".join(p for p in parts if p) or "-"


@boot.command()
@click.option("--kind", type=click.Choice(IMAGE_KINDS), help="Only images of this kind.")
@format_options
@pass_cli
def images(cli: CliContext, kind: str | None, fmt: str) -> None:
    """List boot images (newest first) and how many nodes are assigned to each."""
    with transaction(cli.engine(), readonly=True) as session:
        counts: dict[int, int] = {
            image_id: count
            for image_id, count in session.execute(
                select(BootAssignment.image_id, func.count()).group_by(BootAssignment.image_id)
            )
        }
        stmt = select(BootImage).order_by(
            BootImage.kind, BootImage.created_at.desc(), BootImage.id.desc()
        )
        if kind is not None:
            stmt = stmt.where(BootImage.kind == kind)
        found = list(session.scalars(stmt))
    # JSON is for programs: the full sha256 and built_from; the table and CSV get a summary.
    full = fmt == "json"
    rows = [
        {
            "name": i.name,
            "kind": i.kind,
            "sha256": i.sha256 if fmt != "table" else i.sha256[:12],
            "size": i.size,
            "created": i.created_at,
            "built_from": (i.built_from or {}) if full else _summary(i.built_from),
            "nodes": counts.get(i.id, 0),
        }
        for i in found
    ]
    emit(rows, IMAGE_COLUMNS, fmt, empty="no boot images")


@boot.command()
@click.argument("node_name", metavar="NODE")
@click.argument("image_ref", metavar="IMAGE", required=False)
@click.option(
    "--default",
    "default_kind",
    type=click.Choice(IMAGE_KINDS),
    help="Drop NODE's choice for this kind: it boots the newest image of the kind "
    "(for stage 2 and 3, the newest built for the kernel it boots).",
)
@pass_cli
def assign(
    cli: CliContext, node_name: str, image_ref: str | None, default_kind: str | None
) -> None:
    """Make NODE boot IMAGE (a name or a unique sha256 prefix) for IMAGE's kind,
    or with --default KIND the newest image of that kind."""
    if (image_ref is None) == (default_kind is None):
        raise click.UsageError("give IMAGE or --default KIND (one of them)")
    with transaction(cli.engine()) as session:
        node = get_node(session, node_name)
        if default_kind is not None:
            row = session.get(BootAssignment, (node.id, default_kind))
            if row is None:
                line = f"node {node_name} already boots the newest {default_kind}; nothing changed"
            else:
                session.delete(row)
                line = f"node {node_name} boots the newest {default_kind} image from now on"
        else:
            assert image_ref is not None
            image = find_image(session, image_ref)
            row = session.get(BootAssignment, (node.id, image.kind))
            if row is None:
                session.add(BootAssignment(node_id=node.id, kind=image.kind, image_id=image.id))
            else:
                row.image_id = image.id
            line = f"node {node_name} boots {image.kind} {image.name} ({image.sha256[:12]})"
        session.flush()
        # Not refused: an admin moving a node to a new kernel assigns one kind at a time.
        problem = boot_problem(session, chosen_images(session, node))
    click.echo(line)
    if problem is not None:
        click.echo(f"warning: node {node_name} cannot boot yet: {problem}", err=True)


@boot.command()
@click.argument("image_ref", metavar="IMAGE")
@click.option("--force", is_flag=True, help="Remove it even if nodes are assigned to it.")
@pass_cli
def remove(cli: CliContext, image_ref: str, force: bool) -> None:
    """Remove boot IMAGE (a name or a unique sha256 prefix) and its file."""
    state_dir = cli.config().state_dir
    with transaction(cli.engine()) as session:
        image = find_image(session, image_ref)
        nodes = assigned_nodes(session, image)
        paths = delete_image(session, state_dir, image, force=force)
        name, kind = image.name, image.kind
    # The row is gone (committed) before the file: a node never gets a row without a file.
    try:
        remove_paths(paths)
    except OSError as exc:
        raise BootImageError(name, f"row removed, but not its file: {exc}") from exc
    unassigned = f"; unassigned from {', '.join(nodes)}" if nodes else ""
    click.echo(f"removed {kind} image {name}{unassigned}")


# The builders live in modules of their own (they pull in the archive writers).
boot.add_command(build_stage2)
boot.add_command(build_stage3)
