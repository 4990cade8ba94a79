"""Slurm daemons of a virtual cluster: munged and slurmctld on the host, one slurmd
per node inside the node's network and UTS namespaces.

Each cluster runs its own munged (own key and socket under ``STATE/slurm``),
so a cluster's down stops everything its up started and touches no host
service. Daemons run in the foreground (``-D``/``-F``) as direct children of
our spawn, so the pid file we write (pid + argv, see
:mod:`launcher.cluster.processes`) names the daemon itself; each argv carries
this state dir's slurm.conf (``-f``) or socket, so a leftover of a crashed run
is recognised by its command line and never confused with another cluster's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cachefs.atomicfile import replace_if_changed
from launcher.cluster import processes
from launcher.cluster.nodeexec import node_argv
from launcher.cluster.spec import ClusterSpec, NodeSpec
from launcher.errors import SlurmDaemonError, SlurmError
from launcher.slurm import conf
from launcher.slurm.adapter import SlurmCli
from launcher.slurm.paths import SlurmPaths
from launcher.slurm.settings import SlurmSettings
from launcher.slurm.types import NodeInfo

#: Node states (sinfo's long form, first word) in which a node takes jobs.
READY_STATES = frozenset({"idle", "mixed", "allocated"})
MUNGE_KEY_BYTES = 1024


@dataclass(frozen=True)
class Daemon:
    """One daemon: ``record`` is the command line it shows (what a pid file must match);
    ``argv`` what we spawn (``record`` wrapped in nsenter for a slurmd)."""

    name: str
    argv: list[str]
    record: list[str]
    pid_file: Path
    log: Path


@dataclass(frozen=True)
class DaemonStatus:
    name: str
    pid: int | None
    alive: bool
    log: Path


@dataclass
class StopReport:
    stopped: list[int] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    stale_pid_files: list[Path] = field(default_factory=list)


def _program(name: str) -> str:
    # Root's PATH may lack /usr/sbin (runuser, cron); the Debian packages put them there.
    return shutil.which(name) or f"/usr/sbin/{name}"


def _installed(name: str) -> bool:
    return os.access(_program(name) if name != "sinfo" else (shutil.which(name) or ""), os.X_OK)


def controller(spec: ClusterSpec) -> conf.Controller:
    """slurmctld on this host, reached by the nodes at the bridge address."""
    return conf.Controller(socket.gethostname().split(".")[0], spec.master_address)


def slurm_nodes(
    spec: ClusterSpec, settings: SlurmSettings, features: tuple[str, ...] = ()
) -> list[conf.SlurmNode]:
    """The cluster's nodes as slurm.conf names them; each has all of this host's CPUs
    and ``features`` (the virtual nodes share this host's runtime)."""
    cpus = os.cpu_count() or 1
    return [
        conf.SlurmNode(node.name, node.address, cpus, settings.node_memory_mb, features)
        for node in spec.nodes
    ]


def plan(paths: SlurmPaths, spec: ClusterSpec) -> list[Daemon]:
    """munged, slurmctld, then one slurmd per node: the order they start in."""
    munged = [
        _program("munged"),
        "-F",
        "--force",  # munged refuses root without it
        f"--socket={paths.munge_socket}",
        f"--key-file={paths.munge_key}",
        f"--pid-file={paths.run_dir / 'munged.munge.pid'}",
        f"--seed-file={paths.munge_key.parent / 'munged.seed'}",
    ]
    ctld = [_program("slurmctld"), "-D", "-c", "-f", str(paths.conf)]
    daemons = [
        Daemon("munged", munged, munged, paths.pid_file("munged"), paths.log("munged")),
        Daemon("slurmctld", ctld, ctld, paths.pid_file("slurmctld"), paths.log("slurmctld")),
    ]
    for node in spec.nodes:
        daemons.append(_slurmd(paths, node))
    return daemons


def _slurmd(paths: SlurmPaths, node: NodeSpec) -> Daemon:
    record = [_program("slurmd"), "-D", "-N", node.name, "-f", str(paths.conf)]
    name = f"slurmd.{node.name}"
    # nsenter (not ip netns exec, which remounts /sys and hides the cgroup tree
    # slurmd 22.05 insists on reading) execs slurmd in place: the pid is slurmd's.
    return Daemon(name, node_argv(node, record), record, paths.pid_file(name), paths.log(name))


def write_hooks(directory: Path, beoctl: Path, config: Path) -> conf.Hooks:
    """Write the prolog and epilog wrapper scripts (0755) into ``directory``, and
    build the hooks' C client there when a C compiler is on PATH (the wrappers
    then run it instead of Python; :mod:`launcher.slurm.hookclient`).

    The client is given the agent socket and ``prolog_timeout`` of ``config``
    as they are now: write the hooks again after changing them. Raises
    ConfigError, HookClientBuildError."""
    from launcher import config as beoconfig
    from launcher.slurm import hookclient
    from launcher.slurm.settings import agent_socket

    directory.mkdir(parents=True, exist_ok=True)
    hooks = conf.Hooks.in_dir(directory)
    client = None
    built = hookclient.build(directory)
    if built is not None:
        loaded = beoconfig.load(str(config))
        pattern = agent_socket(loaded.slurm, loaded.state_dir, "%n")
        client = conf.HookClient(built, pattern, loaded.slurm.prolog_timeout)
    for stage, path in (("prolog", hooks.prolog), ("epilog", hooks.epilog)):
        replace_if_changed(path, conf.hook_script(stage, beoctl, config, client), mode=0o755)
    return hooks


def _prepare(paths: SlurmPaths, spec: ClusterSpec) -> None:
    for d in (paths.root, paths.state_save, paths.spool, paths.log_dir, paths.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    # Each slurmd's TmpFS (slurmstepd makes the steps' PMIx dirs in it, as root,
    # and hands them to the job's user); slurmd does not create it.
    for node in spec.nodes:
        paths.node_tmp(node.name).mkdir(mode=0o755, parents=True, exist_ok=True)
    # munged checks that its socket dir is not writable by others and that the
    # key is readable by its user only; users' sbatch must reach the socket.
    paths.munge_dir.mkdir(mode=0o755, exist_ok=True)
    os.chmod(paths.munge_dir, 0o755)
    paths.munge_key.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(paths.munge_key.parent, 0o700)
    try:
        fd = os.open(paths.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(MUNGE_KEY_BYTES))


def up(
    state_dir: Path,
    spec: ClusterSpec,
    settings: SlurmSettings,
    *,
    hooks: conf.Hooks | None = None,
    wait: float = 30.0,
    features: tuple[str, ...] = (),
) -> list[Daemon]:
    """Write ``STATE/slurm/slurm.conf`` for ``spec`` and start what is not running;
    return once every node is idle in ``sinfo``.

    Idempotent: daemons already running with this config are left alone; when
    the config changed (other nodes, ports, hooks) slurmctld and the slurmds
    are restarted. Raises SlurmDaemonError naming the log of a daemon that
    exits or a node that is not ready within ``wait`` seconds; SlurmError
    (ValueError inside) when the cluster has no nodes. ``features`` go on
    every node (the runtime's, :mod:`launcher.slurm.runtime`).
    """
    paths = SlurmPaths.of_state(state_dir)
    missing = [p for p in ("munged", "slurmctld", "slurmd", "sinfo") if not _installed(p)]
    if missing:
        raise SlurmError(
            f"{', '.join(missing)} not found: install them (apt-get install -y slurm-wlm munge)"
        )
    try:
        text = conf.cluster_conf(
            settings, controller(spec), slurm_nodes(spec, settings, features), paths, hooks
        )
    except ValueError as exc:
        raise SlurmError(f"cannot configure Slurm: {exc}; bring up at least one node") from exc
    _prepare(paths, spec)
    daemons = plan(paths, spec)
    munged, ctld, *_ = daemons
    changed = _without_first_job_id(_read_or_empty(paths.conf)) != text
    ctld_running = processes.running(ctld.pid_file, ctld.record) is not None
    if changed or not ctld_running:
        # slurmctld starts with -c (no old jobs), which restarts job ids at
        # FirstJobId: carry the count on, or a new job would take the id of one
        # the state DB already holds (and join its row).
        if changed and ctld_running:
            _save_next_job_id(paths)
        text += f"FirstJobId={next_job_id(paths)}\n"
    if changed:
        # A running slurmctld/slurmd read the old file: restart them on the new one.
        _stop([d for d in _recorded(paths) if d.name != "munged"])
    if changed or not ctld_running:
        replace_if_changed(paths.conf, text, mode=0o644)
    munged, *slurm = daemons
    watched = daemons
    if processes.running(munged.pid_file, munged.record) or not _answers(paths.munge_socket):
        _ensure(munged)
        _wait_socket(munged, paths.munge_socket, wait)
    else:
        # A munged we did not record serves this socket (its pid file was
        # lost); a second one would refuse the socket, so use it as it is.
        watched = slurm
    for daemon in slurm:
        _ensure(daemon)
    wait_ready(paths, watched, [node.name for node in spec.nodes], wait)
    return daemons


def _ensure(daemon: Daemon) -> None:
    record = processes.read_pid_file(daemon.pid_file)
    if record is not None:
        proc = processes.owned_process(record, daemon.record)
        if proc is not None:
            if record.argv == daemon.record:
                return
            processes.terminate([proc])
    processes.start(daemon.argv, daemon.pid_file, daemon.log, record=daemon.record)


def _check_alive(daemon: Daemon) -> None:
    """Raise SlurmDaemonError when ``daemon`` died. Only liveness is checked: just
    after its start a slurmd may still be ``nsenter``, or between that exec and
    its own, when its command line matches nothing (whether it is ours to
    signal is checked where we signal it)."""
    record = processes.read_pid_file(daemon.pid_file)
    if record is None or not processes.alive(record):
        raise SlurmDaemonError(daemon.name, daemon.log, "exited while starting")


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _wait_socket(daemon: Daemon, path: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        if _answers(path):
            return
        _check_alive(daemon)
        if time.monotonic() > deadline:
            raise SlurmDaemonError(daemon.name, daemon.log, f"no socket {path} after {wait:.0f} s")
        time.sleep(0.05)


def wait_ready(
    paths: SlurmPaths, daemons: Sequence[Daemon], names: Sequence[str], wait: float
) -> None:
    """Poll ``sinfo`` until every node in ``names`` is ready; fail naming the
    daemon that died, or the slurmd log of the first node that is not ready."""
    cli = SlurmCli(paths.env())
    deadline = time.monotonic() + wait
    states: dict[str, NodeInfo] = {}
    while True:
        for daemon in daemons:
            _check_alive(daemon)
        with contextlib.suppress(SlurmError):  # slurmctld not answering yet
            states = {n.name: n for n in cli.nodes()}
        waiting = [n for n in names if n not in states or not ready(states[n])]
        if not waiting:
            return
        if time.monotonic() > deadline:
            node = waiting[0]
            state = _describe(states[node]) if node in states else "unknown to slurmctld"
            raise SlurmDaemonError(
                f"slurmd on {node}",
                paths.log(f"slurmd.{node}"),
                f"node is {state} after {wait:.0f} s",
            )
        time.sleep(0.05)


def ready(node: NodeInfo) -> bool:
    """Whether slurmctld would start a job on ``node`` now."""
    return node.state in READY_STATES and not node.drained and "NOT_RESPONDING" not in node.flags


def _describe(node: NodeInfo) -> str:
    flags = "".join(f"+{f}" for f in node.flags)
    return f"{node.state}{flags}" + (f" ({node.reason})" if node.reason else "")


def _recorded(paths: SlurmPaths) -> list[Daemon]:
    """Daemons our pid files under ``STATE/slurm/pids`` name, slurmds first, munged last."""
    found: list[Daemon] = []
    with contextlib.suppress(FileNotFoundError):
        for pid_file in paths.pid_dir.glob("*.pid"):
            name = pid_file.name.removesuffix(".pid")
            record = processes.read_pid_file(pid_file)
            argv = record.argv if record and record.argv else []
            found.append(Daemon(name, argv, argv, pid_file, paths.log(name)))
    order = {"slurmctld": 1, "munged": 2}
    return sorted(found, key=lambda d: (order.get(d.name, 0), d.name))


def _stop(daemons: Sequence[Daemon], report: StopReport | None = None) -> StopReport:
    report = report or StopReport()
    for daemon in daemons:  # in order: slurmds, then slurmctld, then munged
        proc = processes.running(daemon.pid_file, daemon.record or None)
        if proc is None:
            if daemon.pid_file.exists():
                report.stale_pid_files.append(daemon.pid_file)
        else:
            stopped, _killed = processes.terminate([proc])
            (report.stopped if stopped else report.killed).append(proc.pid)
        daemon.pid_file.unlink(missing_ok=True)
    return report


def down(state_dir: Path) -> StopReport:
    """Stop every daemon the pid files under ``STATE/slurm/pids`` name, if it is
    still the process we started (pid, start time and argv checked).
    Leaves the config and logs in place. Raises ClusterProcessError when a
    daemon survives SIGKILL."""
    paths = SlurmPaths.of_state(state_dir)
    recorded = _recorded(paths)
    if any(d.name == "slurmctld" and processes.running(d.pid_file, d.record) for d in recorded):
        _save_next_job_id(paths)
    return _stop(recorded)


_FIRST_JOB_ID = re.compile(r"^FirstJobId=\d+\n", re.MULTILINE)
_NEXT_JOB_ID = re.compile(r"^\s*NEXT_JOB_ID\s*=\s*(\d+)\s*$", re.MULTILINE)
_JOBCOMP_ID = re.compile(r"\bJobId=(\d+)\b")


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


def _without_first_job_id(text: str) -> str:
    return _FIRST_JOB_ID.sub("", text)


def next_job_id(paths: SlurmPaths) -> int:
    """The first job id a restarted slurmctld may give: past what the running one
    said it would give next (saved at stop), and past every job in the jobcomp file."""
    saved = _read_or_empty(paths.next_job_id).strip()
    found = [int(saved)] if saved.isdigit() else []
    found += [int(m) + 1 for m in _JOBCOMP_ID.findall(_read_or_empty(paths.jobcomp))]
    return max([1, *found])


def _save_next_job_id(paths: SlurmPaths) -> None:
    """Keep the running slurmctld's NEXT_JOB_ID (best effort: it may be down)."""
    if not paths.conf.exists():
        return
    try:
        done = subprocess.run(
            ["scontrol", "show", "config"],
            env=paths.env(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    m = _NEXT_JOB_ID.search(done.stdout) if done.returncode == 0 else None
    if m is not None and int(m.group(1)) > next_job_id(paths) - 1:
        paths.next_job_id.write_text(f"{m.group(1)}\n")


def status(state_dir: Path) -> list[DaemonStatus]:
    """Each recorded daemon, its pid and whether it is alive and ours."""
    paths = SlurmPaths.of_state(state_dir)
    rows = []
    for daemon in sorted(_recorded(paths), key=lambda d: (not d.name.startswith("m"), d.name)):
        record = processes.read_pid_file(daemon.pid_file)
        alive = record is not None and processes.owned_process(record) is not None
        rows.append(DaemonStatus(daemon.name, record.pid if record else None, alive, daemon.log))
    return rows
