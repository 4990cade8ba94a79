"""``beonode``: the node side (the agent that runs in the stage-3 root).

Each command imports what it needs itself: ``beonode step`` starts every
Slurm step, and asyncio, rich and psutil would add ~70 ms to each.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from launcher.cli.entry import run
from launcher.errors import ConfigError

DEFAULT_CACHE_BUDGET = 4 * 2**30


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Node agent commands."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as sent to the master.")
def hwreport(as_json: bool) -> None:
    """Print this machine's hardware report (what the agent sends at registration)."""
    import json

    from launcher.cli.output import emit
    from launcher.node.hardware import hardware_report

    report = hardware_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    mem_gib = report["memory_bytes"] / 2**30
    click.echo(
        f"{report['hostname']}: {report['cpus_logical']} CPUs, {mem_gib:.1f} GiB, "
        f"{report['machine']}, Linux {report['kernel']}"
    )
    emit(report["nics"], ("name", "mac", "ipv4", "up", "speed_mbps", "mtu", "driver"), "table")


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the node token: {exc.strerror}") from exc
    if not token:
        raise ConfigError(path, None, "the node token file is empty")
    return token


@cli.command("run")
@click.option("--master", "master_url", required=True, help="ws://HOST:PORT/node")
@click.option("--name", required=True, help="This node's name, as the master knows it.")
@click.option(
    "--token-file", type=click.Path(path_type=Path), required=True, help="The node's token."
)
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), required=True)
@click.option("--roots", "roots_dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--cache-budget",
    type=click.IntRange(min=1),
    default=DEFAULT_CACHE_BUDGET,
    show_default=True,
    help="Bytes the cache may hold.",
)
@click.option(
    "--state-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Where results held for the master are kept [default: CACHE/../agent-state.json].",
)
@click.option(
    "--heartbeat",
    "heartbeat_s",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between heartbeats.",
)
@click.option(
    "--keep-roots",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Environment roots kept after their job for the next job with the same files "
    "(each keeps a FUSE server process); 0 removes each root with its job.",
)
@click.option(
    "--peer-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve the cache to other nodes on this port (0: any free one) [default: do not].",
)
@click.option(
    "--peer-address",
    default="0.0.0.0",
    show_default=True,
    help="Address the peer object service listens on.",
)
@click.option(
    "--local-socket",
    type=click.Path(path_type=Path),
    default=None,
    help="Unix socket for the Slurm prolog, epilog and steps [default: CACHE/../agent.sock].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages too.")
def run_command(
    master_url: str,
    name: str,
    token_file: Path,
    cache_dir: Path,
    roots_dir: Path,
    cache_budget: int,
    state_file: Path | None,
    heartbeat_s: float,
    keep_roots: int,
    peer_port: int | None,
    peer_address: str,
    local_socket: Path | None,
    verbose: bool,
) -> None:
    """Run the node agent until SIGTERM or SIGINT (tasks killed, roots removed)."""
    import logging

    from launcher.node.agent import AgentOptions, serve_until_signalled

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s beonode[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    cache_dir = cache_dir.absolute()
    opts = AgentOptions(
        master_url=master_url,
        name=name,
        token=_read_token(token_file),
        cache_dir=cache_dir,
        roots_dir=roots_dir.absolute(),
        cache_budget=cache_budget,
        state_file=(state_file or cache_dir.parent / "agent-state.json").absolute(),
        heartbeat_s=heartbeat_s,
        keep_roots=keep_roots,
        peer_port=peer_port,
        peer_address=peer_address,
        local_socket=(local_socket or cache_dir.parent / "agent.sock").absolute(),
    )

    serve_until_signalled(opts)


@cli.command(
    "step",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--root", default=None, metavar="DIR", help="The job's environment root (made by the agent)."
)
@click.option("--tmp", "tmp_dir", default=None, metavar="DIR", help="The job's tmp, bound at /tmp.")
@click.option(
    "--slurm-job",
    type=click.IntRange(min=1),
    default=None,
    metavar="ID",
    help="Ask this node's agent where Slurm job ID's root and tmp are (instead of --root/--tmp).",
)
@click.option(
    "--agent-socket",
    default=None,
    metavar="PATH",
    envvar="BEOLAUNCH_AGENT_SOCKET",
    help="The agent's local socket [default: [slurm] agent_socket of the config, %n = "
    "$SLURMD_NODENAME].",
)
@click.option(
    "--home",
    default=None,
    metavar="DIR",
    help="Home to bind in [default: the user's passwd entry].",
)
@click.option(
    "--cwd", default=None, metavar="DIR", help="Directory to start in [default: the current one]."
)
@click.option(
    "--bind",
    "binds",
    multiple=True,
    metavar="DIR",
    help="A host directory to bind at the same path (the root must have its mount point); "
    "repeat for each [default with --slurm-job: the site's binds the agent planned].",
)
@click.option("--allow-root", is_flag=True, help="Run as root too (tests only).")
@click.argument(
    "argv", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- PROG [ARGS]..."
)
def step_command(
    root: str | None,
    tmp_dir: str | None,
    slurm_job: int | None,
    agent_socket: str | None,
    home: str | None,
    cwd: str | None,
    binds: tuple[str, ...],
    allow_root: bool,
    argv: tuple[str, ...],
) -> None:
    """Run PROG in the environment root as the calling user, without root, and
    become it (a Slurm step stays slurmstepd's child). Exit 125 refused as
    root, 126 cannot enter the root or exec PROG, 127 PROG not in the root."""
    from launcher.errors import StepEnterError, StepProgramNotFoundError, StepRefusedError
    from launcher.node.tasks import enter_step

    if slurm_job is not None:
        if root is not None or tmp_dir is not None:
            raise click.UsageError(
                "--slurm-job finds the root and tmp: give neither --root nor --tmp"
            )
        from launcher.node.tasks.slurm_root import slurm_root

        found = slurm_root(slurm_job, agent_socket)
        root, tmp_dir, home = found.root, found.tmp, home or found.home
        binds = binds or found.binds
    elif root is None or tmp_dir is None:
        raise click.UsageError("give --root and --tmp, or --slurm-job")
    opts = enter_step.StepOptions(
        root, tmp_dir, argv, home=home, cwd=cwd, allow_root=allow_root, binds=binds
    )
    try:
        enter_step.enter_step(opts)
    except enter_step.StepFailed as exc:
        if exc.status == enter_step.EXIT_REFUSED:
            raise StepRefusedError(exc.detail) from exc
        cls = (
            StepProgramNotFoundError if exc.status == enter_step.EXIT_NOT_FOUND else StepEnterError
        )
        raise cls(exc.step, exc.detail, exc.errno) from exc


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beonode")
