"""``beoctl node``: the node registry."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from cachefs.atomicfile import write_atomic
from launcher.cli.context import CliContext, pass_cli
from launcher.cli.nodetable import NODE_COLUMNS, PENDING_COLUMNS, node_row
from launcher.cli.output import emit, format_options
from launcher.errors import ConfigError
from launcher.master.bootnodes import accept_node, static_address
from launcher.master.tokens import issue_token
from launcher.state.base import utcnow
from launcher.state.db import transaction
from launcher.state.models import EVENT_LEVELS
from launcher.state.nodelog import node_events
from launcher.state.nodes import (
    add_node,
    find_node,
    get_node,
    list_nodes,
    normalize_mac,
    remove_node,
)

EVENT_COLUMNS = ("time", "level", "source", "message")
_AGO = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@click.group()
def node() -> None:
    """Add and list compute nodes."""


@node.command()
@click.argument("name")
@click.option("--mac", help="The node's boot NIC MAC address.")
@click.option("--address", help="The node's IP address on the cluster network.")
@pass_cli
def add(cli: CliContext, name: str, mac: str | None, address: str | None) -> None:
    """Add node NAME (state 'down' until its agent registers).

    With --mac and a [boot] table in the config, the node gets the next free static
    address on the boot network unless --address is given.
    """
    boot = cli.config().boot if mac and address is None else None
    with transaction(cli.engine()) as session:
        if boot is not None and mac is not None:
            address = static_address(session, boot, normalize_mac(mac))
        added = add_node(session, name, mac=mac, address=address)
        extra = ", ".join(x for x in (added.mac, added.address) if x)
        click.echo(f"added node {added.name}" + (f" ({extra})" if extra else ""))


@node.command()
@click.argument("mac")
@click.option("--name", help="The node's name (default: the next free nN).")
@pass_cli
def accept(cli: CliContext, mac: str, name: str | None) -> None:
    """Accept the pending node with MAC: name it and give it a static address.

    Its next iPXE request boots it; it is 'down' until its agent registers.
    """
    boot = cli.config().boot
    with transaction(cli.engine()) as session:
        accepted = accept_node(session, mac, name=name, boot=boot)
        where = f" at {accepted.address}" if accepted.address else ""
        click.echo(f"accepted {accepted.mac} as node {accepted.name}{where}")


@node.command()
@click.argument("ref", metavar="NODE")
@pass_cli
def remove(cli: CliContext, ref: str) -> None:
    """Remove NODE (a name, or a pending node's MAC) that never ran a job.

    A removed pending MAC that boots again is pending again. A node that ran
    jobs stays for accounting: drain it instead.
    """
    with transaction(cli.engine()) as session:
        found = find_node(session, ref)
        what = ", ".join(x for x in (found.name, found.mac, found.state) if x)
        remove_node(session, found)
    click.echo(f"removed node {ref} ({what})")


@node.command(name="list")
@click.option("--pending", is_flag=True, help="Only nodes that booted but are not accepted.")
@format_options
@pass_cli
def list_(cli: CliContext, pending: bool, fmt: str) -> None:
    """List nodes."""
    with transaction(cli.engine(), readonly=True) as session:
        rows = [node_row(n) for n in list_nodes(session, pending=pending)]
    if pending:
        emit(rows, PENDING_COLUMNS, fmt, empty="no pending nodes")
    else:
        emit(rows, NODE_COLUMNS, fmt, empty="no nodes")


def _since(value: str | None) -> datetime | None:
    """``10m``/``2h``/``3d``/``30s`` ago, or an ISO date/time (UTC when no zone is given)."""
    if value is None:
        return None
    ago = _AGO.match(value.strip())
    if ago is not None:
        return utcnow() - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected like 10m, 2h, 1d or 2026-11-25T17:00", param_hint="--since"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@node.command(name="log")
@click.argument("name")
@click.option("--since", help="Only events since: 10m, 2h, 1d or an ISO time (UTC).")
@click.option(
    "--level",
    type=click.Choice(EVENT_LEVELS),
    default="debug",
    show_default=True,
    help="Only events at this level or worse.",
)
@click.option("-n", "last", type=click.IntRange(min=1), help="Only the last N events.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
@pass_cli
def log_(
    cli: CliContext, name: str, since: str | None, level: str, last: int | None, as_json: bool
) -> None:
    """Print node NAME's events (its syslog lines, boot steps, state changes), oldest first."""
    start = _since(since)
    with transaction(cli.engine(), readonly=True) as session:
        events = node_events(session, get_node(session, name), since=start, level=level, last=last)
        rows = [
            {"time": e.time, "level": e.level, "source": e.source, "message": e.message}
            for e in events
        ]
    if as_json:
        emit(rows, EVENT_COLUMNS, "json")
        return
    for row in rows:
        time = row["time"]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S") if isinstance(time, datetime) else str(time)
        click.echo(f"{stamp} {row['level']:<7} {row['source']:<7} {row['message']}")


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
    try:
        write_atomic(path, text, mode=0o600)
    except OSError as exc:
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
