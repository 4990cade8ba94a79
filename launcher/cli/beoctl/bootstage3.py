"""``beoctl boot build-stage3``: the node's root image, from the master's own install."""

from __future__ import annotations

import os
from pathlib import Path

import click

from bootsvc import squash, stage2, stage3
from bootsvc.errors import Stage3BuildError
from launcher.cli.beoctl import bootimage
from launcher.cli.beoctl.bootkernel import kernel_modules
from launcher.cli.context import CliContext, pass_cli

_say = bootimage.progress("build-stage3")


@click.command("build-stage3")
@bootimage.kernel_option
@click.option(
    "--modules-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A kernel module tree (.../lib/modules/RELEASE) instead of an imported kernel.",
)
@bootimage.output_options("stage3")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["squashfs", "cpio"]),
    default="squashfs",
    show_default=True,
    help="squashfs: stage 2 mounts it as it is (overlay on a tmpfs); cpio: a gzip newc "
    "archive stage 2 unpacks into a tmpfs (slower to boot; the baseline's packing needs it).",
)
@pass_cli
def build_stage3(
    cli: CliContext,
    kernel_name: str | None,
    modules_dir: Path | None,
    busybox: Path | None,
    name: str | None,
    out: Path | None,
    fmt: str,
) -> None:
    """Build stage 3, the root a booted node runs from: this master's Python with
    what the node agent imports, their libraries, libfuse and fusermount, static
    busybox, KERNEL's fuse.ko and the /init that enrolls and starts the agent.

    The same install and inputs give the same bytes (SOURCE_DATE_EPOCH sets the
    archive time).
    """
    found = bootimage.find_busybox(busybox, Stage3BuildError)
    if modules_dir is not None and kernel_name is not None:
        raise click.UsageError("give --kernel or --modules-dir, not both")
    if modules_dir is None:
        kname, modules_dir = kernel_modules(cli, kernel_name, Stage3BuildError)
    else:
        kname = modules_dir.name
    _say(f"kernel {kname} ({modules_dir.name})")
    image, built_from = stage3.build(
        modules_dir,
        busybox=found,
        mtime=stage2.source_date_epoch(os.environ),
        progress=_say,
    )
    built_from["kernel"] = kname
    built_from["format"] = fmt
    if fmt == "squashfs":
        _say("making the squashfs image (mksquashfs, lz4)")
        image = squash.from_newc(image, mtime=stage2.source_date_epoch(os.environ))
        _say(f"stage 3 squashfs: {len(image)} bytes")
    bootimage.store_or_write(
        cli,
        image,
        stage="stage3",
        release=modules_dir.name,
        name=name,
        built_from=built_from,
        out=out,
    )
