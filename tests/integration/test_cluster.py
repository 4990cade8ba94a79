"""The virtual cluster with real namespaces, veths, tmpfs mounts and processes.

Every test builds its own cluster with names and a subnet of its own
(``bt<tag>`` links, ``beotest<tag>-node`` namespaces, a free 10.78.x.0/24), so
runs of other suites on this machine never collide with it, and tears it down
even when it fails.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_address
from pathlib import Path

import psutil
import pytest

from launcher import cluster as vc
from launcher.cli.beoctl import cluster as cluster_cli
from launcher.cli.context import script_group
from launcher.cli.entry import run
from launcher.cluster import mounts, netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None,
    reason="the virtual cluster needs root, iproute2 and util-linux",
)

PY = sys.executable


def _free_subnet() -> str:
    """A 10.78.x.0/24 no interface on the host uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    taken = {w.split("/")[0] for w in used.split() if w.count(".") == 3 and "/" in w}
    for _ in range(100):
        net = IPv4Network(f"10.78.{random.randint(1, 254)}.0/24")
        if not any(ip_address(a) in net for a in taken):
            return str(net)
    raise RuntimeError("no free 10.78.x.0/24")


@dataclass
class Cluster:
    state: Path
    layout: vc.Layout


@pytest.fixture
def cl(tmp_path: Path) -> Iterator[Cluster]:
    tag = secrets.token_hex(2)
    layout = vc.Layout(
        bridge=f"bt{tag}0",
        veth_prefix=f"bt{tag}",
        netns_prefix=f"beotest{tag}-node",
        subnet=_free_subnet(),
    )
    state = tmp_path / "state"
    try:
        yield Cluster(state, layout)
    finally:
        vc.down(state, layout=layout)


def _up(c: Cluster, n: int, **kwargs: object) -> vc.ClusterSpec:
    return vc.up(c.state, n, layout=c.layout, cache_size="8M", **kwargs)  # type: ignore[arg-type]


def _ours(c: Cluster) -> tuple[list[str], list[str], list[Path]]:
    """Namespaces, links and mounts of this test's cluster that exist now."""
    spaces = [s for s in netns.list_netns() if s.startswith(c.layout.netns_prefix)]
    links = [n for n in netns.links() if n.startswith(c.layout.veth_prefix)]
    root = Path(os.path.realpath(c.state))
    mounted = [p for p, _t in mounts.mount_points() if p.is_relative_to(root)]
    return spaces, links, mounted


def _sleeper(node: vc.NodeSpec) -> list[str]:
    return ["sleep", "300"]


def _agent_pids(spec: vc.ClusterSpec) -> dict[str, int]:
    return {n.name: int(n.pid_file.read_text().split()[0]) for n in spec.nodes}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_two_nodes_have_their_address_hostname_and_cache(cl: Cluster) -> None:
    spec = _up(cl, 2)
    assert [n.name for n in spec.nodes] == ["node1", "node2"]
    net = IPv4Network(cl.layout.subnet)
    for node in spec.nodes:
        assert node.netns in netns.list_netns()
        host = vc.run_in_node(node, ["hostname"], capture_output=True, text=True, check=True)
        assert host.stdout.strip() == node.name
        addrs = vc.run_in_node(
            node, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True, text=True
        )
        assert f"{node.address}/24" in addrs.stdout
        assert ip_address(node.address) == net.network_address + 10 + node.index
        assert mounts.is_mounted(node.cache_dir, "tmpfs")
        assert node.roots_dir.is_dir()
    assert spec.master_address == str(net.network_address + 1)
    recorded = json.loads((cl.state / "cluster" / "cluster.json").read_text())
    assert [n["netns"] for n in recorded["nodes"]] == [n.netns for n in spec.nodes]
    # The host's own hostname is untouched.
    assert socket.gethostname() not in ("node1", "node2")


_SERVER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
conn, peer = s.accept()
conn.sendall(("hello from " + socket.gethostname() + " to " + peer[0]).encode())
conn.close()
"""

_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as c:
    print(c.recv(200).decode())
"""


def test_nodes_reach_each_other_and_the_master_over_tcp(cl: Cluster) -> None:
    node1, node2 = _up(cl, 2).nodes
    server = vc.popen_in_node(
        node2, [PY, "-c", _SERVER, node2.address], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        got = vc.run_in_node(
            node1, [PY, "-c", _CLIENT, node2.address, port], capture_output=True, text=True
        )
        assert got.stdout.strip() == f"hello from node2 to {node1.address}"
    finally:
        server.kill()
        server.wait()

    # The master listens on the bridge address on the host.
    master = vc.ClusterSpec(cl.layout).master_address
    with socket.socket() as listener:
        listener.bind((master, 0))
        listener.listen(1)
        port = str(listener.getsockname()[1])
        client = vc.popen_in_node(node1, [PY, "-c", _SENDER, master, port])
        conn, peer = listener.accept()
        with conn:
            assert conn.recv(10) == b"hi"
        assert peer[0] == node1.address
        assert client.wait() == 0


_SENDER = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).sendall(b"hi")
"""

_REPORTER = """
import os, socket, sys, time
with open(sys.argv[1], "w") as f:
    f.write(socket.gethostname() + " " + str(os.stat("/proc/self/ns/net").st_ino))
time.sleep(300)
"""


def test_node_command_runs_in_its_namespace_with_its_hostname(cl: Cluster) -> None:
    def reporter(node: vc.NodeSpec) -> list[str]:
        return [PY, "-c", _REPORTER, str(node.roots_dir.parent / "seen")]

    spec = _up(cl, 2, node_command=reporter)
    for node in spec.nodes:
        seen = node.roots_dir.parent / "seen"
        proc = psutil.Process(_agent_pids(spec)[node.name])
        # The script writes once it runs: poll (up to 10 s) while it is alive.
        for _ in range(1000):
            if (seen.exists() and seen.read_text()) or not proc.is_running():
                break
            time.sleep(0.01)
        hostname, inode = seen.read_text().split()
        assert hostname == node.name
        assert int(inode) == os.stat(node.netns_path).st_ino
        status = {s.node.name: s for s in vc.status(cl.state)[1]}[node.name]
        assert status.agent_alive and status.cache_mounted and status.netns_present


def test_up_again_changes_nothing_and_growing_adds_nodes(cl: Cluster) -> None:
    master = ["sleep", "301"]
    spec = _up(cl, 2, node_command=_sleeper, master_command=master)
    pids = _agent_pids(spec)
    master_pid = (cl.state / "run" / "master.pid").read_text().split()[0]
    before_links = {n: d["ifindex"] for n, d in netns.links().items() if n.startswith("bt")}
    before_mounts = _ours(cl)[2]
    spec_mtime = (cl.state / "cluster" / "cluster.json").stat().st_mtime_ns

    again = _up(cl, 2, node_command=_sleeper, master_command=master)
    assert again == spec
    assert _agent_pids(again) == pids
    assert (cl.state / "run" / "master.pid").read_text().split()[0] == master_pid
    assert {n: d["ifindex"] for n, d in netns.links().items() if n.startswith("bt")} == (
        before_links
    )
    assert _ours(cl)[2] == before_mounts
    assert (cl.state / "cluster" / "cluster.json").stat().st_mtime_ns == spec_mtime

    grown = _up(cl, 3, node_command=_sleeper, master_command=master)
    assert [n.name for n in grown.nodes] == ["node1", "node2", "node3"]
    grown_pids = _agent_pids(grown)
    assert {k: grown_pids[k] for k in pids} == pids
    assert _alive(grown_pids["node3"])
    node3 = grown.nodes[2]
    out = vc.run_in_node(node3, ["hostname"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "node3"


def test_up_restarts_an_agent_that_died(cl: Cluster) -> None:
    spec = _up(cl, 1, node_command=_sleeper)
    pid = _agent_pids(spec)["node1"]
    proc = psutil.Process(pid)
    proc.kill()
    os.waitpid(pid, 0)
    again = _up(cl, 1, node_command=_sleeper)
    new = _agent_pids(again)["node1"]
    assert new != pid and _alive(new)


def test_up_with_a_changed_command_replaces_the_agent(cl: Cluster) -> None:
    old = _agent_pids(_up(cl, 1, node_command=_sleeper))["node1"]
    spec = _up(cl, 1, node_command=lambda node: ["sleep", "299"])
    new = _agent_pids(spec)["node1"]
    assert new != old and _alive(new) and not _alive(old)
    recorded = json.loads(spec.nodes[0].pid_file.read_text().splitlines()[1])
    assert recorded == ["sleep", "299"]


def test_down_removes_everything(cl: Cluster) -> None:
    spec = _up(cl, 2, node_command=_sleeper, master_command=["sleep", "301"])
    pids = list(_agent_pids(spec).values())
    master = int((cl.state / "run" / "master.pid").read_text().split()[0])
    # A process the agent did not start (a job, say) still dies with its node.
    stray = vc.popen_in_node(spec.nodes[0], ["sleep", "302"])
    # A job's env root mounted under roots/ is unmounted too.
    job_root = spec.nodes[1].roots_dir / "job1"
    job_root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "beotest", str(job_root)], check=True)
    assert all(_alive(p) for p in [*pids, master, stray.pid])

    report = vc.down(cl.state, layout=cl.layout)
    stray.wait()
    assert _ours(cl) == ([], [], [])
    assert cl.layout.bridge not in netns.links()
    assert not any(_alive(p) for p in [*pids, master, stray.pid])
    assert set(report.stopped + report.killed) >= {*pids, master}
    assert not (cl.state / "cluster" / "cluster.json").exists()
    assert not (cl.state / "run" / "master.pid").exists()
    assert not spec.nodes[0].pid_file.exists()


def test_down_removes_leftovers_of_a_crashed_run(cl: Cluster) -> None:
    spec = _up(cl, 1, node_command=_sleeper)
    agent = _agent_pids(spec)["node1"]
    # Pieces a crash could leave that cluster.json never recorded: node 7 by hand.
    lay = cl.layout
    subprocess.run(["ip", "netns", "add", lay.netns(7)], check=True)
    veth = ["ip", "link", "add", lay.host_veth(7), "type", "veth"]
    subprocess.run([*veth, "peer", "name", "eth0", "netns", lay.netns(7)], check=True)
    cache7 = cl.state / "cluster" / "node7" / "cache"
    cache7.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "beotest", str(cache7)], check=True)
    # A stale pid file: its process is gone.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (cl.state / "run").mkdir(exist_ok=True)
    (cl.state / "run" / "master.pid").write_text(f"{dead.pid}\n")
    (cl.state / "cluster" / "cluster.json").write_text("{not json")

    report = vc.down(cl.state, layout=lay)
    assert _ours(cl) == ([], [], [])
    assert lay.bridge not in netns.links()
    assert not _alive(agent)
    assert cl.state / "run" / "master.pid" in report.stale_pid_files
    assert not (cl.state / "run" / "master.pid").exists()
    assert not (cl.state / "cluster" / "cluster.json").exists()


def test_a_recycled_pid_is_not_signalled(cl: Cluster) -> None:
    spec = _up(cl, 1, node_command=_sleeper)
    node = spec.nodes[0]
    agent = _agent_pids(spec)["node1"]
    # Another program now holds the pid the file names (as after a reboot).
    other = subprocess.Popen(["sleep", "303"])
    try:
        node.pid_file.write_text(f"{other.pid}\n{json.dumps(['sleep', '300'])}\n")
        report = vc.down(cl.state, layout=cl.layout)
        assert other.poll() is None, "down killed a process it did not start"
        assert node.pid_file in report.stale_pid_files
        # The real agent still went: it ran inside the node's namespace.
        assert not _alive(agent)
    finally:
        other.kill()
        other.wait()


def test_beoctl_cluster_status_and_down(cl: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    from launcher.cli import beoctl

    assert beoctl.main(["init", "--state-dir", str(cl.state)]) == 0
    config = str(cl.state / "config.toml")
    group = script_group("test")
    group.add_command(cluster_cli.cluster)
    capsys.readouterr()
    assert run(group, ["--config", config, "cluster", "status", "--json"], "beoctl") == 0
    assert json.loads(capsys.readouterr().out) == []

    spec = _up(cl, 2, node_command=_sleeper)
    pids = _agent_pids(spec)
    want = [(n.name, n.address, True, pids[n.name], True, True) for n in spec.nodes]

    def status() -> list[tuple[object, ...]]:
        assert run(group, ["--config", config, "cluster", "status", "--json"], "beoctl") == 0
        rows = json.loads(capsys.readouterr().out)
        return [
            (r["name"], r["address"], r["netns_ok"], r["agent_pid"], r["alive"], r["cache_mounted"])
            for r in rows
        ]

    # up returns once the agents are spawned; an agent is "alive" (its argv
    # matches) once nsenter has exec'd it, a moment later on a loaded machine
    deadline = time.monotonic() + 10
    while (got := status()) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    assert got == want

    assert run(group, ["--config", config, "cluster", "down"], "beoctl") == 0
    assert "stopped 2 processes" in capsys.readouterr().out
    assert _ours(cl) == ([], [], [])

    assert (
        run(group, ["--config", config, "cluster", "up", "-n", "1", "--cache-size", "x"], "beoctl")
        == 2
    )
