"""``beosub``: run a program on the cluster with the exact files it has here.

Like ``bpsh``: the closure of PROGRAM is resolved and hashed as you (so only
what you can read goes in), the master stores it and runs the job on N nodes;
each node accepts only once its cache holds and has verified every file.
Output comes back to this terminal; Ctrl-C stops the job everywhere; the exit
status is the worst task's. With ``--batch`` it prints the job id and returns
at once, like ``sbatch --parsable``; the master writes the output to files.

Started on every launch, so it imports little: neither an HTTP library nor
asyncio (:class:`BlockingClient` speaks HTTP/1.1 on a plain Unix socket), rich
only when a table or a progress bar is drawn, the closure resolver only after
the arguments parsed, SQLAlchemy never.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launcher import config as cfg
from launcher.cli.entry import run
from launcher.labels import LineLabels, prefix

if TYPE_CHECKING:
    from cachefs.manifest import Manifest
    from launcher.master.client import BlockingClient


def _in_store(store_dir: Path, sha: str) -> bool | None:
    """Whether the store holds ``sha``; None when this user cannot tell (the store
    is root's only: which contents other users stored is not yours to know)."""
    try:
        os.stat(store_dir / "objects" / sha[:2] / sha)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    return True


def _dry_run(manifest: Manifest, store_dir: Path, learned: frozenset[str] = frozenset()) -> None:
    from launcher.cli.output import emit

    held = {e.sha256: _in_store(store_dir, e.sha256) for e in manifest if e.sha256}
    rows = [
        {
            "path": e.path,
            "kind": e.kind,
            "size": e.size,
            "sha256": e.sha256[:16] if e.sha256 else None,
            "new": None if e.sha256 is None or held[e.sha256] is None else not held[e.sha256],
            "learned": e.path in learned,
        }
        for e in manifest
    ]
    emit(rows, ("path", "kind", "size", "sha256", "new", "learned"), "table")
    objects = manifest.objects()
    if learned:
        click.echo(f"{len(learned)} learned path(s) from earlier runs' late files")
    if any(v is None for v in held.values()):
        store = "new to the store: unknown (only root may look in it)"
    else:
        new = {s: n for s, n in objects.items() if not held[s]}
        store = f"{len(new)} new to the store ({sum(new.values())} bytes)"
    click.echo(
        f"manifest {manifest.id}: {len(manifest)} entries, {len(objects)} objects "
        f"({sum(objects.values())} bytes), {store}; nothing submitted"
    )


class _Printer:
    """Writes task output to our stdout/stderr, whole lines, prefixed with --label."""

    def __init__(self, label: bool) -> None:
        self.labels = LineLabels() if label else None
        self.node_of: dict[int, str] = {}

    def write(self, task: int, stream: str, data: bytes) -> None:
        out = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
        if self.labels is not None:
            data = self.labels.feed((task, stream), prefix(self.node_of.get(task), task), data)
        out.write(data)
        out.flush()

    def close(self) -> None:
        """Print what is left of unfinished last lines (labelled)."""
        if self.labels is None:
            return
        for task, stream in list(self.labels.partial):
            out = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
            out.write(self.labels.rest((task, stream), prefix(self.node_of.get(task), task)))
            out.flush()


class _Bars:
    """The cache-fill bars, importing rich only when a fill is reported to a terminal."""

    def __init__(self) -> None:
        self.bars: Any = None
        self.closed = not sys.stderr.isatty()

    def update(self, node: str, files: tuple[int, int], size: tuple[int, int]) -> None:
        if self.closed:
            return
        if self.bars is None:
            from launcher.cli.progress import NodeBars

            self.bars = NodeBars()
        self.bars.update(node, files[0], files[1], size[0], size[1])

    def close(self) -> None:
        self.closed = True
        if self.bars is not None:
            self.bars.close()


def _run(client: BlockingClient, job: int, label: bool) -> int:
    from launcher.errors import MasterError
    from launcher.wire import Done, Error, Exited, Notice, Output, Progress

    printer = _Printer(label)
    interrupts = 0

    def on_interrupt(_signum: int, _frame: object) -> None:
        # Runs between two reads of the stream (recv is retried after it, PEP 475);
        # the signal goes to the master on a connection of its own.
        nonlocal interrupts
        interrupts += 1
        signum = signal.SIGTERM if interrupts == 1 else signal.SIGKILL
        click.echo(f"beosub: stopping job {job} ({signal.Signals(signum).name})", err=True)
        try:
            client.signal(job, signum)
        except MasterError as exc:
            click.echo(f"beosub: {exc}", err=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    bars = _Bars()
    try:
        for message in client.stream(job):
            if isinstance(message, Progress):
                bars.update(
                    message.node or "?",
                    (message.files_done, message.files_total),
                    (message.bytes_done, message.bytes_total),
                )
                continue
            bars.close()
            if isinstance(message, Output):
                if message.node:
                    printer.node_of[message.task] = message.node
                printer.write(message.task, message.stream, message.payload())
            elif isinstance(message, Exited) and message.node:
                printer.node_of[message.task] = message.node
            elif isinstance(message, Notice):  # a node's word on the job, not a task's output
                click.echo(f"beosub: node {message.node or '?'}: {message.text}", err=True)
            elif isinstance(message, Error):
                click.echo(f"beosub: {message.message}", err=True)
            elif isinstance(message, Done):
                printer.close()
                if message.reason:
                    click.echo(f"beosub: job {job}: {message.reason}", err=True)
                return message.status
    finally:
        bars.close()
        signal.signal(signal.SIGINT, previous)
    return 1


def _slurm_options(
    nodes: int | None,
    ntasks: int | None,
    output: str | None,
    error: str | None,
    passthrough: dict[str, Any],
) -> Any:
    from launcher.slurm.submit import SlurmOptions

    return SlurmOptions(
        nodes=nodes,
        ntasks=ntasks,
        output=output,
        error=error,
        time=passthrough["time"],
        partition=passthrough["partition"],
        job_name=passthrough["job_name"],
        array=passthrough["array"],
        dependency=passthrough["dependency"],
        constraint=passthrough["constraint"],
        extra=tuple(passthrough["slurm_opts"]),
    )


def _beonode() -> Path:
    """The beonode next to this Python: the nodes run the same installation."""
    return Path(sys.executable).parent / "beonode"


def _via_slurm(
    config: cfg.Config,
    manifest: Manifest,
    argv: list[str],
    options: Any,
    *,
    wait: bool,
    label: bool,
    dry_run: bool,
    program_key: str | None = None,
    late: str | None = None,
) -> None:
    """Store the manifest on the master, then sbatch (print the job id) or srun (--wait)."""
    import shlex
    import subprocess

    from launcher.errors import SlurmCommandError
    from launcher.master.client import BlockingClient
    from launcher.master.paths import socket_path
    from launcher.slurm import submit
    from launcher.slurm.adapter import SlurmCli
    from launcher.slurm.paths import SlurmPaths

    paths = SlurmPaths.of_state(config.state_dir)
    env = submit.slurm_env(os.environ, paths)
    if dry_run:
        if wait:
            click.echo(shlex.join(submit.srun_argv(manifest.id, options, _beonode(), argv)))
        else:
            click.echo(f"sbatch --parsable {shlex.join(submit.sbatch_argv(manifest.id, options))}")
            click.echo(submit.batch_script(_beonode(), argv, label=label), nl=False)
        return
    manifest_id = BlockingClient(socket_path(config)).store_manifest(
        manifest.document(), program_key=program_key, late=late
    )
    if wait:
        command = submit.srun_argv(manifest_id, options, _beonode(), argv, label=label)
        # Ctrl-C goes to srun too (same process group): srun forwards it to the tasks.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            done = subprocess.run(command, env=env, check=False)
        except FileNotFoundError as exc:
            raise SlurmCommandError(command, 127, f"{exc}; is slurm-client installed?") from exc
        finally:
            signal.signal(signal.SIGINT, previous)
        code = done.returncode
        raise click.exceptions.Exit(128 - code if code < 0 else code)
    job = SlurmCli(env=env).submit(
        submit.sbatch_argv(manifest_id, options),
        submit.batch_script(_beonode(), argv, label=label),
    )
    click.echo(job)


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
    "--scheduler",
    type=click.Choice(["local", "slurm"]),
    default=None,
    help="Who runs the job: Slurm (sbatch/srun) or the master itself. Default: Slurm "
    "when configured ([slurm] submit, or a cluster up --slurm), else local.",
)
@click.option(
    "-N",
    "--nodes",
    type=click.IntRange(min=1),
    default=None,
    help="Number of nodes [default: 1].",
)
@click.option(
    "-n",
    "--ntasks",
    type=click.IntRange(min=1),
    default=None,
    help="Number of tasks (default: one per node), spread over the nodes.",
)
@click.option(
    "--label", is_flag=True, help="Prefix each output line with node.task (also in --batch files)."
)
@click.option(
    "--batch",
    is_flag=True,
    help="Print the job id and return at once; the output goes to files (-o, -e). "
    "Always so on Slurm unless --wait.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Slurm: run interactively through srun (output here, exit status the task's).",
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="With --batch (or on Slurm): stdout (and stderr, without -e) to FILE, relative "
    "to this directory [default: beolaunch-%j.out; Slurm's slurm-%j.out]. %j is the job "
    "id, %n the node, %t the task, %u the user, %x the job name, %% a percent sign; "
    "%4j zero-pads.",
)
@click.option(
    "-e",
    "--error",
    metavar="FILE",
    help="With --batch (or on Slurm): stderr to FILE (patterns as for -o).",
)
@click.option("-t", "--time", metavar="LIMIT", help="Slurm: time limit (sbatch -t).")
@click.option("-p", "--partition", metavar="NAME", help="Slurm: partition.")
@click.option("-J", "--job-name", metavar="NAME", help="Slurm: job name.")
@click.option("--array", metavar="INDEXES", help="Slurm: a job array (sbatch --array).")
@click.option("-d", "--dependency", metavar="LIST", help="Slurm: sbatch --dependency.")
@click.option(
    "-C",
    "--constraint",
    metavar="FEATURES",
    help="Slurm: node features, e.g. beolaunch-rt-<12 hex> (the nodes' runtime).",
)
@click.option(
    "--slurm-opt",
    "slurm_opts",
    multiple=True,
    metavar="OPT",
    help="Slurm: pass OPT to sbatch (srun with --wait) verbatim, one option per "
    "--slurm-opt, e.g. --slurm-opt=--mem=1G --slurm-opt=--exclusive.",
)
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="PATH",
    help="Also ship PATH (file, directory or glob): dlopen'ed plugins, data.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Nothing late: a path the shipped files lack does not exist for this job "
    "(default: it is fetched from the master, as you, and learned for next time).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the manifest and what is new to the store (on Slurm also the sbatch "
    "command and script); submit nothing.",
)
@click.argument("program")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cli(
    config_flag: str | None,
    scheduler: str | None,
    nodes: int | None,
    ntasks: int | None,
    label: bool,
    includes: tuple[str, ...],
    strict: bool,
    dry_run: bool,
    batch: bool,
    wait: bool,
    output: str | None,
    error: str | None,
    program: str,
    args: tuple[str, ...],
    **passthrough: Any,
) -> None:
    """Run PROGRAM [ARGS...] on the cluster with exactly the files it has here.

    Interactive by default, like bpsh: the output comes here, Ctrl-C stops the
    job on every node, and beosub exits with the worst task's status. With
    --batch, like sbatch --parsable: the job id is printed and beosub returns;
    the job's output goes to files in this directory, created as you.

    On Slurm (the default when Slurm is configured): the files are stored on
    the master, then sbatch runs PROGRAM on every node in an env root holding
    exactly them; beosub prints the Slurm job id (--wait: srun, interactive).
    The manifest id is the job's comment (beolaunch:manifest=ID). Put beosub's
    options before PROGRAM; everything after it goes to the program.
    """
    from launcher.slurm.paths import SlurmPaths
    from launcher.slurm.submit import use_slurm

    config = cfg.load(config_flag)
    on_slurm = use_slurm(config.slurm, SlurmPaths.of_state(config.state_dir), scheduler)
    if batch and wait:
        raise click.UsageError("--batch and --wait exclude each other")
    if not on_slurm:
        if (output or error) and not batch:
            raise click.UsageError("-o/--output and -e/--error go with --batch")
        given = sorted(k for k, v in passthrough.items() if v)
        if given:
            raise click.UsageError(
                f"--{given[0].replace('_', '-').rstrip('s')} goes with Slurm (--scheduler slurm)"
            )
    from cachefs.closure import resolve_command
    from cachefs.snapshot import SnapshotProgress, snapshot
    from launcher.master.client import BlockingClient
    from launcher.master.paths import socket_path

    env = dict(os.environ)
    client = BlockingClient(socket_path(config))
    # The whole command line: an interpreter's script, -m module or -c code counts,
    # in the files shipped and in the key their learned set is kept under.
    command = [program, *args]
    program_key = _program_key(command, env)
    learned = _learned(client, program_key)
    found = resolve_command(command, env=env, includes=includes, learned=learned)
    if sys.stderr.isatty():
        from launcher.cli.progress import byte_progress

        with byte_progress("hashing") as update:

            def on_progress(p: SnapshotProgress) -> None:
                update(p.files_done, p.files_total, p.bytes_done, p.bytes_total)

            manifest = snapshot(
                found.root, found.paths, None, owner=os.getuid(), progress=on_progress
            )
    else:
        manifest = snapshot(found.root, found.paths, None, owner=os.getuid())
    if dry_run:
        _dry_run(manifest, config.store_dir, frozenset(learned))
        if not on_slurm:
            return
    if on_slurm:
        options = _slurm_options(nodes, ntasks, output, error, passthrough)
        _via_slurm(
            config,
            manifest,
            [found.root, *args],
            options,
            wait=wait,
            label=label,
            dry_run=dry_run,
            program_key=program_key,
            late="fail" if strict else None,
        )
        return

    job = client.submit(
        argv=[found.root, *args],
        env=env,
        cwd=os.getcwd(),
        nodes=nodes or 1,
        tasks=ntasks or nodes or 1,
        manifest=manifest.document(),
        batch=batch,
        output=output,
        error=error,
        label=label,
        program_key=program_key,
        late="fail" if strict else None,
    )
    if batch:
        click.echo(job)
        return
    status = _run(client, job, label)
    raise click.exceptions.Exit(status)


def _program_key(command: list[str], env: dict[str, str]) -> str:
    """What runs, for learned sets: the program found through PATH, and for an
    interpreter its script, -m module or code (``Closure.key``)."""
    from cachefs.closure import command_key

    return command_key(command, env=env, cwd=os.getcwd())


def _learned(client: BlockingClient, program_key: str) -> list[str]:
    """Paths this program fetched late before that you can still read here (a
    path gone or unreadable since is left out: the job may fetch it late)."""
    from launcher.errors import BeolaunchError

    try:
        paths = client.learned(program_key)
    except BeolaunchError:
        return []  # an older master, or none: nothing learned
    return [p for p in paths if os.path.isfile(p) and os.access(p, os.R_OK)]


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beosub")
