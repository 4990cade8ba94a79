"""``beoctl node``: the node registry."""

from __future__ import annotations

import click

from launcher.cli.context import CliContext, pass_cli
from launcher.cli.output import emit, format_options
from launcher.state.db import transaction
from launcher.state.models import Node
from launcher.state.nodes import add_node, list_nodes

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
