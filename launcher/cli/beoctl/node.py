"""``beoctl node``: the node registry."""

from __future__ import annotations

import os
from pathlib import Path

import click

from launcher.cli.context import CliContext, pass_cli
from launcher.cli.output import emit, format_options
from launcher.errors import ConfigError
from launcher.master.tokens import issue_token
from launcher.state.db import transaction
from launcher.state.models import Node
from launcher.state.nodes import add_node, get_node, list_nodes

NODE_COLUMNS = ("name", "mac", "address", "state", "reason", "last_seen")


def node_row(node: Node) -> dict[str, object]:
    return {
        "name": node.name,
        "mac": node.mac,
        "address": node.address,
        "state": node.state,
        "reason": node.state_reason,
        "last_seen": node.last_seen,
    }


@click.group()
def node() -> None:
    """Add and list compute nodes."""


@node.command()
@click.argument("name")
@click.option("--mac", help="The node's boot NIC MAC address.")
@click.option("--address", help="The node's IP address on the cluster network.")
@pass_cli
def add(cli: CliContext, name: str, mac: str | None, address: str | None) -> None:
    """Add node NAME (state 'down' until its agent registers)."""
    with transaction(cli.engine()) as session:
        added = add_node(session, name, mac=mac, address=address)
        click.echo(f"added node {added.name}" + (f" ({added.mac})" if added.mac else ""))


@node.command(name="list")
@click.option("--pending", is_flag=True, help="Only nodes that booted but are not accepted.")
@format_options
@pass_cli
def list_(cli: CliContext, pending: bool, fmt: str) -> None:
    """List nodes."""
    with transaction(cli.engine(), readonly=True) as session:
        rows = [node_row(n) for n in list_nodes(session, pending=pending)]
    emit(rows, NODE_COLUMNS, fmt, empty="no nodes")


@node.command()
@click.argument("name")
@click.option(
    "--write",
    "write_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the token to FILE (mode 0600) instead of printing it.",
)
@pass_cli
def token(cli: CliContext, name: str, write_to: Path | None) -> None:
    """Issue a new control token for node NAME (its older token stops working)."""
    with transaction(cli.engine()) as session:
        secret = issue_token(session, get_node(session, name))
        if write_to is not None:
            _write_private(write_to, secret + "\n")
    if write_to is None:
        click.echo(secret)
    else:
        click.echo(f"wrote the token of node {name} to {write_to} (mode 0600)")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` created 0600 (replacing it atomically)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(path, None, f"cannot write the node token: {exc.strerror}") from exc


@node.command()
@click.argument("name")
@click.option("--reason", required=True, help="Why (shown by beostat nodes).")
@pass_cli
def drain(cli: CliContext, name: str, reason: str) -> None:
    """Take node NAME out of scheduling (running jobs finish)."""
    with transaction(cli.engine()) as session:
        found = get_node(session, name)
        found.state = "drained"
        found.state_reason = reason
    click.echo(f"drained node {name}: {reason}")


@node.command()
@click.argument("name")
@pass_cli
def resume(cli: CliContext, name: str) -> None:
    """Return drained node NAME to scheduling (up at its agent's next heartbeat)."""
    with transaction(cli.engine()) as session:
        found = get_node(session, name)
        if found.state != "drained":
            click.echo(f"node {name} is {found.state}, not drained; nothing to do")
            return
        found.state = "down"
        found.state_reason = "resumed; up at the agent's next heartbeat"
    click.echo(f"resumed node {name}")
