"""``beoctl boot build-stage2``: the small initramfs, with the NIC drivers the nodes need."""

from __future__ import annotations

import os
from pathlib import Path

import click

from bootsvc import stage2
from bootsvc.errors import Stage2BuildError
from bootsvc.modalias import read_pci_modaliases
from launcher.cli.beoctl import bootimage
from launcher.cli.beoctl.bootkernel import kernel_modules
from launcher.cli.context import CliContext, pass_cli

_say = bootimage.progress("build-stage2")


@click.command("build-stage2")
@bootimage.kernel_option
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
@bootimage.output_options("stage2")
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
    found = bootimage.find_busybox(busybox, Stage2BuildError)
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
    bootimage.store_or_write(
        cli,
        image,
        stage="stage2",
        release=modules_dir.name,
        name=name,
        built_from=built_from,
        out=out,
    )
