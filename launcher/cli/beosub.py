"""``beosub``: run a program on the cluster with the exact files it has here.

Like ``bpsh``: the closure of PROGRAM is resolved and hashed as you (so only
what you can read goes in), the master stores it and runs the job on N nodes;
each node accepts only once its cache holds and has verified every file.
Output comes back to this terminal; Ctrl-C stops the job everywhere; the exit
status is the worst task's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from cachefs.closure import resolve
from cachefs.manifest import Manifest
from cachefs.snapshot import SnapshotProgress, snapshot
from launcher import config as cfg
from launcher.cli.entry import run
from launcher.cli.output import emit
from launcher.cli.progress import NodeBars, byte_progress
from launcher.master.client import MasterClient
from launcher.master.paths import socket_path
from launcher.wire import Done, Error, Exited, Output, Progress


def _in_store(store_dir: Path, sha: str) -> bool:
    # The store's objects are world-readable (0444 in 0755 dirs): a user can look.
    return (store_dir / "objects" / sha[:2] / sha).exists()


def _dry_run(manifest: Manifest, store_dir: Path) -> None:
    rows = [
        {
            "path": e.path,
            "kind": e.kind,
            "size": e.size,
            "sha256": e.sha256[:16] if e.sha256 else None,
            "new": None if e.sha256 is None else not _in_store(store_dir, e.sha256),
        }
        for e in manifest
    ]
    emit(rows, ("path", "kind", "size", "sha256", "new"), "table")
    objects = manifest.objects()
    new = {s: n for s, n in objects.items() if not _in_store(store_dir, s)}
    click.echo(
        f"manifest {manifest.id}: {len(manifest)} entries, {len(objects)} objects "
        f"({sum(objects.values())} bytes), {len(new)} new to the store "
        f"({sum(new.values())} bytes); nothing submitted"
    )


class _Printer:
    """Writes task output to our stdout/stderr, whole lines, prefixed with --label."""

    def __init__(self, label: bool) -> None:
        self.label = label
        self.partial: dict[tuple[int, str], bytes] = {}
        self.node_of: dict[int, str] = {}

    def write(self, task: int, stream: str, data: bytes) -> None:
        out = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
        if not self.label:
            out.write(data)
            out.flush()
            return
        buf = self.partial.pop((task, stream), b"") + data
        *lines, rest = buf.split(b"\n")
        prefix = f"{self.node_of.get(task, '?')}.{task}: ".encode()
        out.write(b"".join(prefix + line + b"\n" for line in lines))
        out.flush()
        if rest:
            self.partial[(task, stream)] = rest


async def _run(client: MasterClient, job: int, label: bool) -> int:
    printer = _Printer(label)
    loop = asyncio.get_running_loop()
    interrupts = 0
    pending: set[asyncio.Task[str]] = set()

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        signum = signal.SIGTERM if interrupts == 1 else signal.SIGKILL
        click.echo(f"beosub: stopping job {job} ({signal.Signals(signum).name})", err=True)
        task = loop.create_task(client.signal(job, signum))
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    bars = NodeBars()
    try:
        async for message in client.stream(job):
            if isinstance(message, Progress):
                bars.update(
                    message.node or "?",
                    message.files_done,
                    message.files_total,
                    message.bytes_done,
                    message.bytes_total,
                )
                continue
            bars.close()
            if isinstance(message, Output):
                if message.node:
                    printer.node_of[message.task] = message.node
                printer.write(message.task, message.stream, message.payload())
            elif isinstance(message, Exited) and message.node:
                printer.node_of[message.task] = message.node
            elif isinstance(message, Error):
                click.echo(f"beosub: {message.message}", err=True)
            elif isinstance(message, Done):
                if message.reason:
                    click.echo(f"beosub: job {job}: {message.reason}", err=True)
                return message.status
    finally:
        bars.close()
        loop.remove_signal_handler(signal.SIGINT)
    return 1


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "allow_interspersed_args": False}
)
@click.option(
    "--config",
    "config_flag",
    metavar="FILE",
    help=f"Configuration file (default: ${cfg.CONFIG_ENV}, then {cfg.DEFAULT_CONFIG}).",
)
@click.option(
    "-N",
    "--nodes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of nodes.",
)
@click.option(
    "-n",
    "--ntasks",
    type=click.IntRange(min=1),
    default=None,
    help="Number of tasks (default: one per node), spread over the nodes.",
)
@click.option("--label", is_flag=True, help="Prefix each output line with node.task.")
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="PATH",
    help="Also ship PATH (file, directory or glob): dlopen'ed plugins, data.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the manifest and what is new to the store; submit nothing.",
)
@click.argument("program")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cli(
    config_flag: str | None,
    nodes: int,
    ntasks: int | None,
    label: bool,
    includes: tuple[str, ...],
    dry_run: bool,
    program: str,
    args: tuple[str, ...],
) -> None:
    """Run PROGRAM [ARGS...] on the cluster with exactly the files it has here."""
    config = cfg.load(config_flag)
    env = dict(os.environ)
    found = resolve(program, env=env, includes=includes)
    with byte_progress("hashing") as update:

        def on_progress(p: SnapshotProgress) -> None:
            update(p.files_done, p.files_total, p.bytes_done, p.bytes_total)

        manifest = snapshot(found.root, found.paths, None, owner=os.getuid(), progress=on_progress)
    if dry_run:
        _dry_run(manifest, config.store_dir)
        return

    async def submit_and_watch() -> int:
        client = MasterClient(socket_path(config))
        job = await client.submit(
            argv=[found.root, *args],
            env=env,
            cwd=os.getcwd(),
            nodes=nodes,
            tasks=ntasks or nodes,
            manifest=manifest.document(),
        )
        return await _run(client, job, label)

    status = asyncio.run(submit_and_watch())
    raise click.exceptions.Exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beosub")
