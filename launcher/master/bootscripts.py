"""What the boot HTTP service says: its settings and the text of the iPXE scripts.

Pure functions of their arguments (the handlers are in
:mod:`launcher.master.boothttp`): ``boot.ipxe`` (served over TFTP), the
waiting script (pending, refused or not bootable yet: it says why and asks
again) and the boot script (kernel, stage 2 and the one-time ticket).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bootsvc.mounts import MASTER, SiteMount, from_exports
from bootsvc.settings import (
    DEFAULT_MAX_PENDING,
    DEFAULT_NEW_NODES_PER_ADDRESS_PER_MINUTE,
    DEFAULT_NEW_NODES_PER_MINUTE,
    DEFAULT_TICKET_TTL_S,
    BootSettings,
)
from launcher.config import Config
from launcher.state.models import BootImage

#: Seconds a waiting node's iPXE sleeps before it asks for its script again.
RETRY_S = 5


@dataclass(frozen=True)
class BootHttpSettings:
    """What the boot service puts in scripts and enroll answers, and its limits."""

    state_dir: Path
    http: tuple[str, int]
    logs_port: int
    control: tuple[str, int]
    peer_port: int
    #: the ``[boot] master_address``; None: the address each request came in on
    master_address: str | None = None
    ticket_ttl_s: int = DEFAULT_TICKET_TTL_S
    extra_kernel_args: str = ""
    max_pending: int = DEFAULT_MAX_PENDING
    new_nodes_per_minute: int = DEFAULT_NEW_NODES_PER_MINUTE
    new_nodes_per_address_per_minute: int = DEFAULT_NEW_NODES_PER_ADDRESS_PER_MINUTE
    #: what each node mounts, ``{master}`` filled in (sent in the enroll answer)
    mounts: tuple[SiteMount, ...] = ()

    @classmethod
    def of(cls, config: Config, boot: BootSettings, http_port: int) -> BootHttpSettings:
        """The settings of a master with ``boot``: the service listens on its
        ``master_address`` at ``http_port`` (``[services.boot_http] port``)."""
        control = config.service("control")
        return cls(
            state_dir=config.state_dir,
            http=(str(boot.master_address), http_port),
            logs_port=config.service("logs").port,
            control=(control.address, control.port),
            peer_port=config.peers.port,
            master_address=str(boot.master_address),
            ticket_ttl_s=boot.ticket_ttl_s,
            extra_kernel_args=boot.extra_kernel_args,
            max_pending=boot.max_pending,
            new_nodes_per_minute=boot.new_nodes_per_minute,
            new_nodes_per_address_per_minute=boot.new_nodes_per_address_per_minute,
            mounts=tuple(m.for_master(str(boot.master_address)) for m in site_mounts(config, boot)),
        )


def site_mounts(config: Config, boot: BootSettings) -> tuple[SiteMount, ...]:
    """What booted nodes mount: ``[[boot.mounts]]`` when given (an empty list: nothing),
    else each ``[nfs]`` export from the address and port the master serves it on."""
    if boot.mounts is not None:
        return boot.mounts
    nfs = config.nfs
    if nfs is None:
        return ()
    host = MASTER if nfs.address == boot.master_address else str(nfs.address)
    return from_exports(nfs.exports, host, nfs.port)


def script_url(host: str, port: int) -> str:
    """The per-node script URL iPXE expands (``${mac:hexhyp}``: 52-54-00-...)."""
    return f"http://{bracket(host)}:{port}/boot/${{mac:hexhyp}}.ipxe"


def boot_ipxe(host: str, port: int) -> str:
    """``boot.ipxe``, served over TFTP to every iPXE client: chain to its own script,
    and when that fails (master away, 429/503 for a new node) ask again every RETRY_S s
    instead of falling back to the firmware."""
    return (
        "#!ipxe\n"
        ":retry\n"
        f"chain {script_url(host, port)} || goto wait\n"
        ":wait\n"
        f"echo Beolaunch: no boot script from {bracket(host)}:{port}; asking again\n"
        f"sleep {RETRY_S}\n"
        "goto retry\n"
    )


def waiting_script(host: str, port: int, reason: str, *, renew: bool = False) -> str:
    """A script that shows ``reason`` and asks for the node's script again every RETRY_S s;
    with ``renew`` it asks DHCP for a lease first (a node accepted while it held a pool
    address is leased its static one only when it asks again)."""
    # iPXE expands ${...} in echo: keep the reason to plain characters.
    text = re.sub(r"[^A-Za-z0-9 .,:;/_()'=+-]", "?", reason)
    return (
        "#!ipxe\n"
        f"echo Beolaunch: {text}\n"
        ":retry\n"
        f"sleep {RETRY_S}\n"
        + ("dhcp || goto retry\n" if renew else "")
        + f"chain {script_url(host, port)} || goto retry\n"
    )


def boot_script(
    s: BootHttpSettings, host: str, name: str, ticket: str, images: dict[str, BootImage]
) -> str:
    """The script booting ``name``: kernel and stage 2 over HTTP, the rest on the command line."""
    base = f"http://{bracket(host)}:{s.http[1]}/boot/images"
    args = [
        f"{base}/{images['kernel'].sha256}",
        "initrd=stage2",
        "console=ttyS0",
        "panic=-1",
        f"beolaunch.master={host}",
        f"beolaunch.http={s.http[1]}",
        f"beolaunch.logs={s.logs_port}",
        f"beolaunch.name={name}",
        f"beolaunch.ticket={ticket}",
        f"beolaunch.stage3={images['stage3'].sha256}",
    ]
    if s.extra_kernel_args:
        args.append(s.extra_kernel_args)
    return (
        "#!ipxe\n"
        f"kernel {' '.join(args)}\n"
        f"initrd --name stage2 {base}/{images['stage2'].sha256}\n"
        "boot\n"
    )


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
