"""``beoctl init --isolated``: a state dir whose cluster runs beside others on one machine.

Two virtual clusters on one machine (a demo next to a test, two test suites)
collide on the master's service ports, the bridge, veth and namespace names,
the subnet, the peer port and Slurm's ports and cluster name. An isolated
config gets its own of each, chosen once when the config is written:

- names from a tag (``[a-z0-9]``, at most :data:`MAX_TAG` characters): bridge
  ``beo-TAG``, node veths ``beo-TAG-Nh``, namespaces ``beo-TAG-nodeN``, Slurm
  cluster ``beoTAG``. Tags have no ``-``, so two tags never name the same thing,
  and none of these looks like the default layout's ``beo0``/``beoNh``;
- a /24 from :data:`SUBNET_POOL` that no address on this machine overlaps
  (``ip -4 -o addr``);
- ports the kernel hands out as free at that moment (bound to port 0).

Ports and subnets are free when chosen, not reserved: a cluster brought up
long after its init may find one taken, and then fails to bind or to add its
bridge address, naming it.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import socket
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from launcher import config as cfg
from launcher.cluster.spec import NETNS_DIR, Layout
from launcher.errors import IsolationError
from launcher.initialize import initialize

MAX_TAG = 6  # "beo-" + tag + "-" + "244" (last node of a /24) + "h": 15, the kernel's limit
_TAG_RE = re.compile(rf"^[a-z0-9]{{1,{MAX_TAG}}}$")
#: Where isolated subnets come from: 8192 /24s, away from the default 10.77.0.0/24.
SUBNET_POOL = IPv4Network("10.96.0.0/11")
_LAYOUT_KEYS = ("bridge", "veth_prefix", "netns_prefix", "subnet")
_INET_RE = re.compile(r"\binet (\d+\.\d+\.\d+\.\d+(?:/\d+)?)")
#: Socket type of each master service (logs and tftp are UDP).
SERVICE_KINDS: Mapping[str, int] = {
    "control": socket.SOCK_STREAM,
    "objects": socket.SOCK_STREAM,
    "logs": socket.SOCK_DGRAM,
    "boot_http": socket.SOCK_STREAM,
    "tftp": socket.SOCK_DGRAM,
    "status": socket.SOCK_STREAM,
}


@dataclass(frozen=True)
class SlurmPorts:
    """The ``[slurm]`` keys an isolated config sets."""

    cluster_name: str
    slurmctld_port: int
    slurmd_port: int


@dataclass(frozen=True)
class Isolation:
    """An isolated state dir: its config and what it was given."""

    config: Path
    tag: str
    layout: Layout
    services: Mapping[str, int]
    peer_port: int
    slurm: SlurmPorts | None
    #: what this init made (empty when the state dir was already initialised)
    created: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return self.layout.bridge

    @property
    def veth_prefix(self) -> str:
        return self.layout.veth_prefix

    @property
    def netns_prefix(self) -> str:
        return self.layout.netns_prefix

    @property
    def subnet(self) -> str:
        return self.layout.subnet


def layout_of(tag: str, subnet: str) -> Layout:
    """The cluster names for ``tag`` in ``subnet``; raises IsolationError for a bad tag."""
    if not _TAG_RE.match(tag):
        raise IsolationError(
            "tag",
            tag,
            f"use 1 to {MAX_TAG} lowercase letters or digits (names of interfaces are short)",
        )
    return Layout(
        bridge=f"beo-{tag}",
        veth_prefix=f"beo-{tag}-",
        netns_prefix=f"beo-{tag}-node",
        subnet=subnet,
    )


def free_subnet(ip_addr: str, rng: random.Random | None = None) -> str:
    """A /24 of :data:`SUBNET_POOL` that no address in ``ip_addr`` (the output of
    ``ip -4 -o addr``) overlaps, picked at random so concurrent inits rarely
    agree. Raises IsolationError when every one is taken."""
    base = int(SUBNET_POOL.network_address) >> 8  # /24s as numbers
    end = base + SUBNET_POOL.num_addresses // 256
    free = set(range(base, end))
    for found in _INET_RE.findall(ip_addr):
        net = IPv4Interface(found).network
        first = int(net.network_address) >> 8
        last = first + max(net.num_addresses // 256, 1)
        free.difference_update(range(max(first, base), min(last, end)))
    if not free:
        raise IsolationError(
            "subnet pool", str(SUBNET_POOL), "every /24 overlaps an address of this machine"
        )
    pick = (rng or random.SystemRandom()).choice(sorted(free))
    return str(IPv4Network((pick << 8, 24)))


#: Lowest port :func:`free_ports` picks.
LOWEST_PORT = 10000


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(kinds: Sequence[int], rng: random.Random | None = None) -> list[int]:
    """One free port per socket type in ``kinds`` (SOCK_STREAM or SOCK_DGRAM), all
    different, below the kernel's ephemeral range: a port the kernel picked
    for ``bind(0)`` is one it also gives outgoing connections, and one did
    take a test master's port between the pick and the master's bind. Each
    socket stays bound until all are chosen."""
    pick = rng or random.SystemRandom()
    top = max(LOWEST_PORT + 1000, _ephemeral_low())
    ports: list[int] = []
    with ExitStack() as held:
        for kind in kinds:
            for _ in range(1000):
                port = pick.randrange(LOWEST_PORT, top)
                if port in ports:  # a TCP and a UDP port may coincide
                    continue
                s = held.enter_context(socket.socket(socket.AF_INET, kind))
                try:
                    s.bind(("0.0.0.0", port))
                except OSError:
                    continue
                ports.append(port)
                break
            else:
                raise IsolationError("ports", f"{LOWEST_PORT}-{top}", "no free port found")
    return ports


def local_services(address: str = "127.0.0.1") -> dict[str, dict[str, Any]]:
    """A ``[services]`` table on ``address`` with a free port for each service,
    picked together so no two services share one (picked one at a time, two did,
    and the master failed to bind its second)."""
    ports = free_ports([SERVICE_KINDS[name] for name in cfg.SERVICES])
    return {
        name: {"address": address, "port": port}
        for name, port in zip(cfg.SERVICES, ports, strict=True)
    }


def names_in_use(layout: Layout, links: str, namespaces: Sequence[str]) -> list[str]:
    """Which of ``layout``'s names exist: links in ``links`` (``ip -o link``
    output) and network namespaces in ``namespaces``."""
    found = []
    for m in re.finditer(r"^\d+:\s+([^:@\s]+)", links, re.MULTILINE):
        name = m.group(1)
        if name == layout.bridge or layout.veth_index(name) is not None:
            found.append(name)
    found += [n for n in namespaces if layout.netns_index(n) is not None]
    return found


def isolated_tables(
    tag: str | None, *, slurm: bool = True, rng: random.Random | None = None
) -> dict[str, dict[str, Any]]:
    """The config tables of a new isolated state dir: free service ports,
    ``[cluster]`` names from ``tag`` (a random free one when None) and a free
    subnet, ``[peers] port`` and, with ``slurm``, ``[slurm]`` name and ports.

    Raises IsolationError when ``tag`` is malformed or its names exist on this
    machine, or when ``ip`` cannot be run.
    """
    subnet = free_subnet(_ip("-4", "-o", "addr"), rng)
    links = _ip("-o", "link")
    namespaces = _namespaces()
    if tag is None:
        while True:
            layout = layout_of(secrets.token_hex(MAX_TAG // 2), subnet)
            if not names_in_use(layout, links, namespaces):
                break
        tag = layout.bridge.removeprefix("beo-")
    else:
        layout = layout_of(tag, subnet)
        taken = names_in_use(layout, links, namespaces)
        if taken:
            raise IsolationError(
                "tag",
                tag,
                f"{', '.join(taken)} already exist on this machine (another cluster's); "
                "choose another --tag or leave it out for a random one",
            )
    layout.check(layout.max_nodes())  # names of the last node fit IFNAMSIZ (MAX_TAG)
    kinds = [SERVICE_KINDS[name] for name in cfg.SERVICES]
    ports = free_ports([*kinds, socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_STREAM])
    services, (peer, slurmctld, slurmd) = ports[: len(kinds)], ports[len(kinds) :]
    tables: dict[str, dict[str, Any]] = {
        "services": {name: {"port": p} for name, p in zip(cfg.SERVICES, services, strict=True)},
        "cluster": {key: getattr(layout, key) for key in _LAYOUT_KEYS},
        "peers": {"port": peer},
    }
    if slurm:
        tables["slurm"] = {
            "cluster_name": f"beo{tag}",
            "slurmctld_port": slurmctld,
            "slurmd_port": slurmd,
        }
    return tables


def init_isolated(
    state_dir: Path,
    tag: str | None = None,
    *,
    database_url: str | None = None,
    slurm: bool = True,
) -> Isolation:
    """``beoctl init --isolated``: :func:`launcher.initialize.initialize` with a
    config of the state dir's own (see :func:`isolated_tables`).

    A state dir already initialised is left alone and its isolation returned.
    Raises IsolationError (an InitConflictError) when the names cannot be had,
    when the existing config has no ``[cluster]`` table of an isolated init or
    was made with another tag; otherwise what ``initialize`` raises.
    """
    if tag is not None:
        layout_of(tag, str(SUBNET_POOL))  # a bad tag fails before anything is made
    result = initialize(
        state_dir,
        database_url,
        tables=lambda: isolated_tables(tag, slurm=slurm),
    )
    isolation = read(result.config.path)
    if tag is not None and isolation.tag != tag:
        raise IsolationError(
            "tag",
            tag,
            f"{result.config.path} was initialised with tag {isolation.tag!r}; "
            "use that tag or init another state dir",
        )
    return Isolation(
        isolation.config,
        isolation.tag,
        isolation.layout,
        isolation.services,
        isolation.peer_port,
        isolation.slurm,
        result.created,
    )


def read(config_path: Path) -> Isolation:
    """The isolation an existing config was given by ``init --isolated``.

    Raises ConfigError when the file cannot be read, IsolationError when its
    ``[cluster]`` table is not one an isolated init writes.
    """
    config = cfg.load(str(config_path))
    given = config.cluster
    tag = (given.bridge or "").removeprefix("beo-")
    layout = layout_of(tag, given.subnet or "") if _TAG_RE.match(tag) else None
    if layout is None or given != cfg.ClusterSettings(
        **{k: getattr(layout, k) for k in _LAYOUT_KEYS}
    ):
        raise IsolationError(
            "state dir",
            str(config.state_dir),
            "already initialised without --isolated (its [cluster] names are not "
            "an isolated init's); init another state dir",
        )
    slurm = None
    if "slurm" in config.given:
        got = config.slurm
        slurm = SlurmPorts(got.cluster_name, got.slurmctld_port, got.slurmd_port)
    return Isolation(
        config_path,
        tag,
        layout,
        {name: addr.port for name, addr in config.services.items()},
        config.peers.port,
        slurm,
    )


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise IsolationError("command", "ip", f"cannot run ({exc}): install iproute2") from exc
    if done.returncode != 0:
        raise IsolationError(
            "command", f"ip {' '.join(args)}", f"failed: {done.stderr.strip() or done.returncode}"
        )
    return done.stdout


def _namespaces() -> list[str]:
    try:
        return os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
