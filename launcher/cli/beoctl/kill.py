"""``beoctl kill``: signal a job on every node it runs on."""

from __future__ import annotations

import asyncio
import signal

import click

from launcher.cli.context import CliContext, pass_cli
from launcher.master.client import MasterClient
from launcher.master.paths import socket_path


def _signum(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    name = value.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise click.BadParameter(f"{value!r}: give a signal name (TERM, KILL) or number") from None


@click.command()
@click.argument("job", type=int)
@click.argument("sig", default="TERM", callback=_signum, metavar="[SIGNAL]")
@pass_cli
def kill(cli: CliContext, job: int, sig: int) -> None:
    """Send SIGNAL (default TERM) to every task of JOB, on every node."""
    client = MasterClient(socket_path(cli.config()))
    result = asyncio.run(client.signal(job, sig))
    click.echo(f"job {job}: {signal.Signals(sig).name} {result}".rstrip())
