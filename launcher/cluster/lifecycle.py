"""Bringing the virtual cluster up and down.

Commands run on its nodes through :mod:`launcher.cluster.nodeexec`; its Slurm
daemons (:mod:`launcher.cluster.slurmdaemons`) are started and stopped by the
command that asks for them (``beoctl cluster up --slurm``, ``cluster down``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from launcher.cluster import mounts, netns, processes
from launcher.cluster import spec as specs
from launcher.cluster.nodeexec import node_argv
from launcher.cluster.spec import DEFAULT_LAYOUT, ClusterSpec, Layout, NodeSpec
from launcher.errors import ClusterSpecError

NodeCommand = Callable[[NodeSpec], list[str]]


def _ensure_node(state_dir: Path, layout: Layout, node: NodeSpec, cache_size: str) -> None:
    netns.ensure_node(layout, node)
    node.roots_dir.mkdir(parents=True, exist_ok=True)
    mounts.ensure_tmpfs(node.cache_dir, cache_size)
    mounts.ensure_uts(node.uts_file, node.name)


def up(
    state_dir: Path,
    n: int,
    *,
    node_command: NodeCommand | None = None,
    master_command: list[str] | None = None,
    cache_size: str = "512M",
    layout: Layout = DEFAULT_LAYOUT,
) -> ClusterSpec:
    """Make the cluster have exactly ``n`` nodes; start what is not running.

    Idempotent: only what is missing is created (a second call with the same
    arguments changes nothing); nodes above ``n`` and leftovers named by
    ``layout`` are removed. The master runs on the host, each node's command
    in its namespaces with its hostname; output goes to their log files.
    Raises ClusterError (ClusterCommandError when ip/mount fail,
    ClusterProcessError when a command cannot be started).
    """
    state_dir = state_dir.absolute()
    layout.check(n)
    old = _read_or_none(state_dir)
    if old is not None and old.layout != layout:
        raise ClusterSpecError(
            specs.spec_path(state_dir),
            f"a cluster with another layout ({old.layout}) is up: run 'beoctl cluster down' first",
        )
    nodes = [specs.node_spec(state_dir, layout, i) for i in range(1, n + 1)]
    # Nodes above n (a shrink, or a crashed bigger run) go first.
    spaces, veths = netns.leftovers(layout)
    extra = {layout.netns_index(s) for s in spaces} | {layout.veth_index(v) for v in veths}
    for index in sorted(i for i in extra if i is not None and i > n):
        _remove_node(state_dir, layout, specs.node_spec(state_dir, layout, index), DownReport())

    node_argvs = {node.name: node_command(node) for node in nodes} if node_command else {}
    spec = ClusterSpec(
        layout=layout,
        nodes=nodes,
        cache_size=cache_size,
        master_argv=list(master_command) if master_command else None,
        node_argv=node_argvs,
    )
    specs.cluster_dir(state_dir).mkdir(parents=True, exist_ok=True)
    # Record before building, so an interrupted up is found by down.
    specs.write(state_dir, spec)
    if nodes:
        netns.ensure_bridge(layout)
    for node in nodes:
        _ensure_node(state_dir, layout, node, cache_size)

    if master_command:
        _ensure_running(
            master_command,
            master_command,
            specs.master_pid_file(state_dir),
            specs.master_log_file(state_dir),
        )
    for node in nodes:
        argv = node_argvs.get(node.name)
        if argv:
            _ensure_running(node_argv(node, argv), argv, node.pid_file, node.log_file)
    return spec


def _ensure_running(
    argv: Sequence[str], record: Sequence[str], pid_file: Path, log_file: Path
) -> None:
    """Start ``argv`` unless ``pid_file`` names our live process running ``record``.

    A live process of ours running another command (the command changed since
    the last ``up``) is stopped first, so no agent is left without a pid file.
    """
    old = processes.read_pid_file(pid_file)
    if old is not None:
        proc = processes.owned_process(old, record)
        if proc is not None:
            if old.argv is None or old.argv == list(record):
                return
            processes.terminate([proc])
    processes.start(argv, pid_file, log_file, record=record)


def _read_or_none(state_dir: Path) -> ClusterSpec | None:
    try:
        return specs.read(state_dir)
    except ClusterSpecError:
        return None


@dataclass
class DownReport:
    """What ``down`` found and removed."""

    stopped: list[int] = field(default_factory=list)  # pids that ended on SIGTERM
    killed: list[int] = field(default_factory=list)  # pids that needed SIGKILL
    unmounted: list[Path] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # namespaces and links
    stale_pid_files: list[Path] = field(default_factory=list)
    not_ours: list[Path] = field(default_factory=list)  # pid files naming someone else
    spec_removed: bool = False


def _stop_pid_file(pid_file: Path, argv: Sequence[str] | None, report: DownReport) -> None:
    record = processes.read_pid_file(pid_file)
    if record is None and not pid_file.exists():
        return
    proc = processes.owned_process(record, argv) if record else None
    if proc is None:
        if record is not None and record.argv is None and not argv:
            # A live pid we cannot match to a command: leave it and say so.
            with contextlib.suppress(psutil.Error):
                if psutil.Process(record.pid).status() != psutil.STATUS_ZOMBIE:
                    report.not_ours.append(pid_file)
                    return
        report.stale_pid_files.append(pid_file)
    else:
        _terminate([proc], report)
    pid_file.unlink(missing_ok=True)


def _terminate(procs: list[psutil.Process], report: DownReport) -> None:
    if not procs:
        return
    before = [p.pid for p in procs]
    stopped, _killed = processes.terminate(procs)
    # terminate() signals in order; which pids needed SIGKILL is not kept apart.
    report.stopped.extend(before[:stopped])
    report.killed.extend(before[stopped:])


def _remove_node(state_dir: Path, layout: Layout, node: NodeSpec, report: DownReport) -> None:
    _stop_pid_file(node.pid_file, None, report)
    # Whatever else runs in the node's namespace (a job, a test's server) is ours too.
    pids = netns.netns_pids(node.netns)
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    _terminate(procs, report)
    report.unmounted.extend(mounts.unmount_under(node.cache_dir.parent))
    report.removed.extend(netns.remove_node(layout, node.netns, node.host_veth))
    node.uts_file.unlink(missing_ok=True)


def down(state_dir: Path, *, layout: Layout | None = None) -> DownReport:
    """Stop and remove everything the cluster under ``state_dir`` consists of.

    Works from ``cluster.json`` and, whether or not it is there or readable,
    from the names ``layout`` produces (default: the recorded layout, else the
    standard one): processes from pid files (SIGTERM, then SIGKILL), processes
    left in the nodes' namespaces, mounts under ``STATE/cluster``, the
    namespaces, veths and the bridge, then ``cluster.json``. Slurm's daemons
    are not stopped here: stop them first (slurmctld and munged run on the
    host, where the namespace sweep does not find them), as ``beoctl cluster
    down`` does. Raises ClusterError when a removal fails.
    """
    state_dir = state_dir.absolute()
    report = DownReport()
    recorded = _read_or_none(state_dir)
    layouts: list[Layout] = []
    for candidate in (recorded.layout if recorded else None, layout):
        if candidate is not None and candidate not in layouts:
            layouts.append(candidate)
    if not layouts:
        layouts.append(DEFAULT_LAYOUT)

    for lay in layouts:
        indexes: set[int] = set()
        if recorded and recorded.layout == lay:
            indexes |= {node.index for node in recorded.nodes}
        spaces, veths = netns.leftovers(lay)
        indexes |= {i for i in map(lay.netns_index, spaces) if i is not None}
        indexes |= {i for i in map(lay.veth_index, veths) if i is not None}
        indexes |= _node_dirs(state_dir)
        for index in sorted(indexes):
            node = specs.node_spec(state_dir, lay, index)
            argv = recorded.node_argv.get(node.name) if recorded else None
            _stop_pid_file(node.pid_file, argv, report)
            _remove_node(state_dir, lay, node, report)
        if netns.remove_bridge(lay):
            report.removed.append(lay.bridge)
    master_argv = recorded.master_argv if recorded else None
    _stop_pid_file(specs.master_pid_file(state_dir), master_argv, report)
    report.unmounted.extend(mounts.unmount_under(specs.cluster_dir(state_dir)))
    path = specs.spec_path(state_dir)
    if path.exists():
        path.unlink()
        report.spec_removed = True
    return report


def _node_dirs(state_dir: Path) -> set[int]:
    found = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in specs.cluster_dir(state_dir).iterdir():
            suffix = entry.name.removeprefix("node")
            if entry.name.startswith("node") and suffix.isdigit() and int(suffix) > 0:
                found.add(int(suffix))
    return found


@dataclass(frozen=True)
class NodeStatus:
    node: NodeSpec
    netns_present: bool
    agent_pid: int | None
    agent_alive: bool
    cache_mounted: bool


def status(state_dir: Path) -> tuple[ClusterSpec | None, list[NodeStatus]]:
    """The recorded cluster and, per node, what is actually there.

    Raises ClusterSpecError when ``cluster.json`` is unreadable.
    """
    state_dir = state_dir.absolute()
    spec = specs.read(state_dir)
    if spec is None:
        return None, []
    present = set(netns.list_netns())
    rows = []
    for node in spec.nodes:
        record = processes.read_pid_file(node.pid_file)
        argv = spec.node_argv.get(node.name)
        alive = record is not None and processes.owned_process(record, argv) is not None
        rows.append(
            NodeStatus(
                node=node,
                netns_present=node.netns in present,
                agent_pid=record.pid if record else None,
                agent_alive=alive,
                cache_mounted=mounts.is_mounted(node.cache_dir, "tmpfs"),
            )
        )
    return spec, rows
