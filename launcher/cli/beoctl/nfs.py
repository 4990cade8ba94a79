"""``beoctl nfs``: the directories the master serves its nodes over NFS (docs/nfs.md)."""

from __future__ import annotations

import click

from launcher.cli.context import CliContext, pass_cli
from launcher.cli.output import emit, format_options
from launcher.master import nfsserver

STATUS_COLUMNS = (
    "server",
    "running",
    "pid",
    "address",
    "port",
    "listening",
    "clients",
    "exports",
    "pending",
)


@click.group()
def nfs() -> None:
    """The master's NFS server: the [nfs] exports, for the cluster network only."""


@nfs.command()
@pass_cli
def apply(cli: CliContext) -> None:
    """Serve [nfs] of the config: write the server's config, start it or have it reload.

    The server runs on after this command and after the master stops; it binds the
    [nfs] address of the network namespace this command runs in."""
    result = nfsserver.apply(cli.config())
    served = result.served
    pid = f" (pid {result.pid})" if result.pid is not None else ""
    click.echo(
        f"{served.server} {result.action}{pid}: serving {', '.join(served.exports)} "
        f"on {served.address}:{served.port} to {served.clients} (NFSv4, root_squash)"
    )
    if served.server == "kernel":
        click.echo(
            "the kernel's nfsd takes its address, port and versions from /etc/nfs.conf, "
            "not from [nfs]",
            err=True,
        )


@nfs.command()
@format_options
@pass_cli
def status(cli: CliContext, fmt: str) -> None:
    """What is served: the server, whether it runs and answers, its exports."""
    now = nfsserver.status(cli.config())
    served = now.served
    row = {
        "server": served.server if served else None,
        "running": now.running,
        "pid": now.pid,
        "address": served.address if served else None,
        "port": served.port if served else None,
        "listening": now.listening,
        "clients": served.clients if served else None,
        "exports": list(served.exports) if served else [],
        "pending": now.pending,
    }
    emit([row], STATUS_COLUMNS, fmt)
    if now.pending and fmt == "table":
        click.echo("[nfs] in the config differs from what is served: beoctl nfs apply", err=True)


@nfs.command()
@pass_cli
def stop(cli: CliContext) -> None:
    """Stop serving: stop ganesha, or remove the kernel's exports. Nodes that mount
    the exports wait (hard mounts) until it is served again."""
    served, pid = nfsserver.stop(cli.config())
    if served is None and pid is None:
        click.echo("nothing was served; nothing changed")
    elif served is not None and served.server == "kernel":
        click.echo(f"removed the exports of {', '.join(served.exports)} from the kernel's nfsd")
    elif pid is None:
        click.echo("ganesha was not running; forgot what it served")
    else:
        click.echo(f"stopped ganesha (pid {pid})")
