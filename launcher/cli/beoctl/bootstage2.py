"""``beoctl boot build-stage2``: the small initramfs, with the NIC drivers the nodes need."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import click

from bootsvc import stage2
from bootsvc.errors import Stage2BuildError
from bootsvc.modalias import read_pci_modaliases
from launcher.cli.beoctl.bootkernel import kernel_modules
from launcher.cli.context import CliContext, pass_cli
from launcher.state.bootimages import store_image
from launcher.state.db import transaction


def _say(line: str) -> None:
    click.echo(f"build-stage2: {line}", err=True)


@click.command("build-stage2")
@click.option("--kernel", "kernel_name", default=None, help="Kernel image [default: the newest].")
@click.option(
    "--modalias",
    "modaliases",
    multiple=True,
    metavar="ALIAS",
    help="A node NIC's PCI modalias (/sys/bus/pci/devices/*/modalias); repeatable "
    "[default: this machine's network devices].",
)
@click.option(
    "--virtio", is_flag=True, help="Add QEMU's virtio-net NIC (the virtual nodes' driver)."
)
@click.option(
    "--busybox",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A static busybox [default: busybox on $PATH].",
)
@click.option("--name", default=None, help="Image name [default: stage2-KERNEL-SHA12].")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the image to FILE instead of adding it to the master's images.",
)
@pass_cli
def build_stage2(
    cli: CliContext,
    kernel_name: str | None,
    modaliases: tuple[str, ...],
    virtio: bool,
    busybox: Path | None,
    name: str | None,
    out: Path | None,
) -> None:
    """Build stage 2: busybox, the init script and the NIC modules of KERNEL that
    match the nodes' network devices (modules.alias, loaded in modules.dep order).

    The same inputs give the same bytes (SOURCE_DATE_EPOCH sets the archive time).
    """
    found = busybox or (Path(p) if (p := shutil.which("busybox")) else None)
    if found is None:
        raise Stage2BuildError("busybox", "(not found)", "apt-get install busybox-static")
    aliases = list(modaliases) or ([] if virtio else read_pci_modaliases())
    if virtio:
        aliases.append(stage2.VIRTIO_NET_MODALIAS)
    kname, modules_dir = kernel_modules(cli, kernel_name, Stage2BuildError)
    _say(f"kernel {kname} ({modules_dir.name}), {len(aliases)} PCI device(s) to match")
    image, built_from = stage2.build_for_kernel(
        modules_dir,
        aliases,
        found,
        mtime=stage2.source_date_epoch(os.environ),
        progress=_say,
    )
    built_from["kernel"] = kname
    if out is not None:
        sha = stage2.write(out, image)
        click.echo(f"wrote {out}: {len(image)} bytes, sha256 {sha}")
        return
    with transaction(cli.engine()) as session:
        digest = hashlib.sha256(image).hexdigest()
        row = store_image(
            session,
            cli.config().state_dir,
            image,
            kind="stage2",
            name=name or f"stage2-{modules_dir.name}-{digest[:12]}",
            built_from=built_from,
        )
        click.echo(f"stage 2 image {row.name}: {row.size} bytes, sha256 {row.sha256}")
