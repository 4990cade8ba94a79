"""``beoctl cluster``: a virtual cluster of network namespaces on this machine."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import sys
import time
from pathlib import Path

import click
from sqlalchemy import Engine, select

from cachefs.atomicfile import write_atomic
from launcher import cluster as vc
from launcher.cli.beoctl import slurm as slurm_cli
from launcher.cli.context import CliContext, pass_cli
from launcher.cli.output import emit
from launcher.config import Config
from launcher.errors import MasterError
from launcher.master.client import MasterClient
from launcher.master.daemon import socket_path
from launcher.master.tokens import issue_token
from launcher.state.db import transaction
from launcher.state.models import Node
from launcher.state.nodes import add_node

STATUS_COLUMNS = (
    "name",
    "netns",
    "netns_ok",
    "address",
    "agent_pid",
    "alive",
    "cache_mounted",
    "slurmd_pid",
)
_SIZE_RE = re.compile(r"^[1-9][0-9]*[kKmMgG%]?$")
_LAYOUT_KEYS = ("bridge", "veth_prefix", "netns_prefix", "subnet")
_UNITS = {"k": 2**10, "m": 2**20, "g": 2**30}
#: Share of a node's tmpfs its cache budget may fill: the rest is for partial
#: downloads and the cache's own files, so eviction starts before ENOSPC.
BUDGET_SHARE = 0.9


def cache_budget(size: str) -> int | None:
    """The node cache budget (bytes) for a tmpfs of ``size`` (mount(8) syntax).

    None for a percentage (of RAM, which the agent does not know): the agent's
    default then applies.
    """
    unit = size[-1].lower()
    if unit == "%":
        return None
    if unit in _UNITS:
        return int(int(size[:-1]) * _UNITS[unit] * BUDGET_SHARE)
    return int(int(size) * BUDGET_SHARE)


def configured_layout(config: Config) -> vc.Layout:
    """The cluster layout from the config's optional ``[cluster]`` table.

    Keys ``bridge``, ``veth_prefix``, ``netns_prefix`` and ``subnet`` (strings);
    an absent table or key keeps the default, so two state dirs with their own
    names and subnet can have clusters up side by side (``config.cluster``,
    checked when the config was loaded).
    """
    values = {key: getattr(config.cluster, key) for key in _LAYOUT_KEYS}
    return vc.Layout(**{key: value for key, value in values.items() if value is not None})


def default_commands(
    config: Config, engine: Engine, budget: int | None = None
) -> tuple[vc.NodeCommand | None, list[str] | None]:
    """The node agent command (per node) and the master command ``cluster up`` starts.

    Building a node's command also makes sure the state database knows the node
    (name, address) and that it has a token, written 0600 next to its cache:
    the agent authenticates with it, the master keeps only its sha256. The argv
    never changes between runs, so a second ``up`` restarts nothing.
    ``budget`` (bytes) caps each agent's cache, so it evicts before its tmpfs
    is full. The agents reach the master at the layout's master address (on the
    bridge) unless the control service listens on one address only; each serves
    its cache to the others on ``[peers] port`` (its own namespace's address).
    """
    bindir = Path(sys.executable).parent
    control = config.service("control")
    host = control.address
    if ipaddress.ip_address(host).is_unspecified:
        host = str(configured_layout(config).master_address())
    master_url = f"ws://{host}:{control.port}/node"
    master = [str(bindir / "beoctl"), "--config", str(config.path), "master", "serve"]

    def node_command(spec: vc.NodeSpec) -> list[str]:
        token_file = spec.cache_dir.parent / "token"
        _ensure_node(engine, spec, token_file)
        return [
            str(bindir / "beonode"),
            "run",
            "--master",
            master_url,
            "--name",
            spec.name,
            "--token-file",
            str(token_file),
            "--cache",
            str(spec.cache_dir),
            "--roots",
            str(spec.roots_dir),
            *(["--cache-budget", str(budget)] if budget else []),
            *(["--peer-port", str(config.peers.port)] if config.peers.port else []),
            "--local-socket",
            str(spec.cache_dir.parent / "agent.sock"),
        ]

    return node_command, master


def _ensure_node(engine: Engine, spec: vc.NodeSpec, token_file: Path) -> None:
    with transaction(engine) as session:
        node = session.scalars(select(Node).where(Node.name == spec.name)).first()
        if node is None:
            node = add_node(session, spec.name, address=spec.address)
        elif node.address != spec.address:
            node.address = spec.address
        if node.token_sha256 is not None and token_file.exists():
            return
        token = issue_token(session, node)
        token_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(token_file, token + "\n", mode=0o600)


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
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the master and every agent.",
)
@click.option(
    "--slurm",
    is_flag=True,
    help="Also run Slurm: munged and slurmctld here, a slurmd in each node (docs/slurm.md).",
)
@pass_cli
def up(cli: CliContext, n: int, cache_size: str, wait: float, slurm: bool) -> None:
    """Make the cluster have N nodes and start whatever is not running."""
    config = cli.config()
    layout = configured_layout(config)
    node_command, master_command = default_commands(config, cli.engine(), cache_budget(cache_size))
    spec = vc.up(
        config.state_dir,
        n,
        node_command=node_command,
        master_command=master_command,
        cache_size=cache_size,
        layout=layout,
    )
    names = ", ".join(f"{node.name} {node.address}" for node in spec.nodes)
    click.echo(f"cluster up: {len(spec.nodes)} nodes on {spec.bridge} ({names})")
    up_nodes = asyncio.run(_wait_ready(config, {node.name for node in spec.nodes}, wait))
    click.echo(f"{len(up_nodes)} of {len(spec.nodes)} nodes registered with the master")
    if slurm:
        click.echo(slurm_cli.start_virtual(config, spec, wait))


async def _wait_ready(config: Config, names: set[str], seconds: float) -> set[str]:
    """Wait until the master answers and every node has registered; say why if not."""
    log = config.state_dir / "cluster" / "master.log"
    client = MasterClient(socket_path(config))
    deadline = time.monotonic() + seconds
    up: set[str] = set()
    while time.monotonic() < deadline:
        try:
            rows = await client.nodes()
        except MasterError:
            rows = []
        up = {r["name"] for r in rows if r.get("state") in ("up", "busy")} & names
        if up == names:
            return up
        await asyncio.sleep(0.2)
    if not socket_path(config).exists():
        tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        raise click.ClickException(
            f"the master did not start within {seconds:.0f} s; the end of {log}:\n"
            + "\n".join(tail)
        )
    return up


@cluster.command()
@pass_cli
def down(cli: CliContext) -> None:
    """Stop the cluster's processes and remove its namespaces, links and mounts."""
    config = cli.config()
    # Slurm's daemons first: slurmctld and munged run on the host, where the
    # cluster's namespace sweep would not find them.
    slurm = slurm_cli.stop_virtual(config.state_dir)
    report = vc.down(config.state_dir, layout=configured_layout(config))
    killed = len(slurm.killed) + len(report.killed)
    stopped = len(slurm.stopped) + len(report.stopped) + killed
    click.echo(
        f"cluster down: stopped {stopped} processes "
        f"({killed} killed), unmounted {len(report.unmounted)}, "
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
    state_dir = cli.config().state_dir
    _spec, nodes = vc.status(state_dir)
    slurm = slurm_cli.daemon_rows(state_dir)
    slurmd = {r["daemon"].removeprefix("slurmd."): r["pid"] for r in slurm if r["alive"]}
    rows = [
        {
            "name": s.node.name,
            "netns": s.node.netns,
            "netns_ok": s.netns_present,
            "address": s.node.address,
            "agent_pid": s.agent_pid,
            "alive": s.agent_alive,
            "cache_mounted": s.cache_mounted,
            "slurmd_pid": slurmd.get(s.node.name),
        }
        for s in nodes
    ]
    emit(rows, STATUS_COLUMNS, fmt, empty="no cluster: run 'beoctl cluster up -n N'")
    if fmt == "table" and slurm:
        emit(slurm, ("daemon", "pid", "alive", "log"), fmt, title="Slurm")
