"""``beoctl cluster``: a virtual cluster of network namespaces on this machine."""

from __future__ import annotations

import re

import click

from launcher import cluster as vc
from launcher.cli.context import CliContext, pass_cli
from launcher.cli.output import emit
from launcher.config import Config

STATUS_COLUMNS = ("name", "netns", "netns_ok", "address", "agent_pid", "alive", "cache_mounted")
_SIZE_RE = re.compile(r"^[1-9][0-9]*[kKmMgG%]?$")


def default_commands(config: Config) -> tuple[vc.NodeCommand | None, list[str] | None]:
    """The node agent command (per node) and the master command ``cluster up`` starts.

    The one place to wire in ``beonode run ...`` and ``beoctl master serve``
    once they exist; (None, None) starts nothing but the network and mounts.
    """
    return None, None


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not _SIZE_RE.match(value):
        raise click.BadParameter(f"{value!r}: give a tmpfs size such as 512M, 2G or 10%")
    return value


@click.group()
def cluster() -> None:
    """A virtual cluster: N nodes on this machine, each a network namespace."""


@cluster.command()
@click.option("-n", "--nodes", "n", type=click.IntRange(min=1), required=True, help="Node count.")
@click.option(
    "--cache-size",
    default="512M",
    show_default=True,
    callback=_size,
    metavar="SIZE",
    help="Size of each node's tmpfs cache (mount(8) syntax).",
)
@pass_cli
def up(cli: CliContext, n: int, cache_size: str) -> None:
    """Make the cluster have N nodes and start whatever is not running."""
    config = cli.config()
    node_command, master_command = default_commands(config)
    spec = vc.up(
        config.state_dir,
        n,
        node_command=node_command,
        master_command=master_command,
        cache_size=cache_size,
    )
    names = ", ".join(f"{node.name} {node.address}" for node in spec.nodes)
    click.echo(f"cluster up: {len(spec.nodes)} nodes on {spec.bridge} ({names})")


@cluster.command()
@pass_cli
def down(cli: CliContext) -> None:
    """Stop the cluster's processes and remove its namespaces, links and mounts."""
    report = vc.down(cli.config().state_dir)
    click.echo(
        f"cluster down: stopped {len(report.stopped) + len(report.killed)} processes "
        f"({len(report.killed)} killed), unmounted {len(report.unmounted)}, "
        f"removed {len(report.removed)} namespaces and links"
    )
    for pid_file in report.not_ours:
        click.echo(f"left running: the process in {pid_file} (not one this cluster started)")


@cluster.command()
@click.option("--json", "fmt", flag_value="json", help="Print JSON for programs.")
@click.option("--table", "fmt", flag_value="table", default=True, hidden=True)
@pass_cli
def status(cli: CliContext, fmt: str) -> None:
    """The nodes of the cluster and what runs on them."""
    _spec, nodes = vc.status(cli.config().state_dir)
    rows = [
        {
            "name": s.node.name,
            "netns": s.node.netns,
            "netns_ok": s.netns_present,
            "address": s.node.address,
            "agent_pid": s.agent_pid,
            "alive": s.agent_alive,
            "cache_mounted": s.cache_mounted,
        }
        for s in nodes
    ]
    emit(rows, STATUS_COLUMNS, fmt, empty="no cluster: run 'beoctl cluster up -n N'")
