"""``beostat``: nodes, jobs and every job process on every node.

Live figures (load, memory, cache, processes) come from the master, which
hears them in the agents' heartbeats. With no master running, ``nodes`` and
``jobs`` fall back to what the state database recorded.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import click

from launcher.cli.context import CliContext, pass_cli, script_group
from launcher.cli.entry import run
from launcher.cli.nodetable import NODE_COLUMNS, node_row
from launcher.cli.output import emit, format_options
from launcher.master.client import MasterClient
from launcher.master.paths import socket_path
from launcher.state.db import transaction
from launcher.state.nodes import list_nodes
from launcher.state.queries import job_summaries

T = TypeVar("T")

cli = script_group("Show nodes, jobs and the cluster-wide process list.")


def _live(cli: CliContext, call: Callable[[MasterClient], Coroutine[Any, Any, T]]) -> T | None:
    """The master's answer, or None when no master runs here."""
    path = socket_path(cli.config())
    if not path.exists():
        return None
    return asyncio.run(call(MasterClient(path)))


def _root_only() -> None:
    """The state database is root's only: without a master, only root may look."""
    if os.geteuid() != 0:
        raise click.ClickException(
            "no master is running here, and only root reads the state database; "
            "start the master (beoctl master serve, or its service) or ask an admin"
        )


def _gib(n: Any) -> str | None:
    return f"{int(n) / 2**30:.1f}G" if isinstance(n, int | float) else None


@cli.command()
@format_options
@pass_cli
def nodes(cli: CliContext, fmt: str) -> None:
    """Every node: state, load, memory, cache used/budget, objects, pinned."""
    live = _live(cli, lambda c: c.nodes())
    if live is None:
        _root_only()
        with transaction(cli.engine(), readonly=True) as session:
            rows = [node_row(n) for n in list_nodes(session)]
        emit(rows, NODE_COLUMNS, fmt, empty="no nodes (and no master running)")
        return
    if fmt == "table":
        for r in live:
            load = r.get("load") or []
            mem = r.get("memory") or {}
            r["load1"] = round(load[0], 2) if load else None
            r["mem_avail"] = _gib(mem.get("available"))
            r["cache"] = (
                f"{_gib(r.get('cache_used'))}/{_gib(r.get('cache_budget'))}"
                if r.get("cache_budget")
                else None
            )
        cols: tuple[str, ...] = (
            "name",
            "state",
            "reason",
            "address",
            "load1",
            "mem_avail",
            "cache",
            "objects",
            "pinned",
            "last_seen",
        )
    else:
        cols = (
            "name",
            "state",
            "reason",
            "address",
            "load",
            "memory",
            "cache_used",
            "cache_budget",
            "objects",
            "pinned",
            "last_seen",
        )
    emit(live, cols, fmt, empty="no nodes")


JOB_COLUMNS = (
    "job",
    "scheduler",
    "scheduler_id",
    "name",
    "uid",
    "state",
    "nodes",
    "manifest",
    "submitted",
    "exit",
    "reason",
)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include finished jobs.")
@format_options
@pass_cli
def jobs(cli: CliContext, show_all: bool, fmt: str) -> None:
    """Jobs (unfinished ones unless --all), oldest first."""
    live = _live(cli, lambda c: c.jobs(all_jobs=show_all))
    if live is not None:
        emit(live, JOB_COLUMNS, fmt, empty="no jobs")
        return
    _root_only()
    with transaction(cli.engine(), readonly=True) as session:
        rows = job_summaries(session, finished=show_all)
    emit(rows, JOB_COLUMNS, fmt, empty="no jobs")


@cli.command()
@format_options
@pass_cli
def ps(cli: CliContext, fmt: str) -> None:
    """Every job process on every node (from the agents' heartbeats, every 5 s)."""
    live = _live(cli, lambda c: c.ps())
    if live is None:
        raise click.ClickException(
            "no master is running: start it with 'beoctl cluster up' or 'beoctl master serve'"
        )
    cols = ("node", "job", "pid", "user", "state", "cpu", "rss", "cmd")
    emit(live, cols, fmt, empty="no job processes")


@cli.command()
@pass_cli
def web(cli: CliContext) -> None:
    """Print a link to the status page, logged in as you (good for 8 hours).

    Open it in a browser that reaches the master's [services.status] address;
    the link is yours: whoever opens it sees what you may see."""
    url = _live(cli, lambda c: c.status_login())
    if url is None:
        raise click.ClickException(
            "no master is running: start it with 'beoctl cluster up' or 'beoctl master serve'"
        )
    click.echo(url)


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beostat")
