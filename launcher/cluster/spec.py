"""What a virtual cluster is made of: names, addresses, paths, and ``cluster.json``.

Everything is derived from a :class:`Layout` (bridge name, veth and netns
prefixes, subnet) and the node index, so ``down`` can find the pieces of a
crashed run again from the prefixes alone when ``cluster.json`` is lost.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from cachefs.atomicfile import replace_if_changed
from launcher.errors import ClusterSpecError

SPEC_VERSION = 1
IFNAMSIZ = 15  # longest interface name the kernel accepts (16 bytes with the NUL)
NETNS_DIR = Path("/run/netns")
FIRST_NODE_OFFSET = 10  # node i gets host number 10+i in the subnet

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Layout:
    """Names and subnet of one virtual cluster; tests pick their own to run side by side."""

    bridge: str = "beo0"
    veth_prefix: str = "beo"  # host side of node i's veth: f"{veth_prefix}{i}h"
    netns_prefix: str = "beolaunch-node"  # node i's namespace: f"{netns_prefix}{i}"
    subnet: str = "10.77.0.0/24"

    def network(self) -> IPv4Network:
        return IPv4Network(self.subnet)

    def master_address(self) -> IPv4Address:
        return self.network().network_address + 1

    def max_nodes(self) -> int:
        return self.network().num_addresses - FIRST_NODE_OFFSET - 2

    def netns(self, index: int) -> str:
        return f"{self.netns_prefix}{index}"

    def host_veth(self, index: int) -> str:
        return f"{self.veth_prefix}{index}h"

    def netns_index(self, name: str) -> int | None:
        """The node index of a namespace named by this layout, else None."""
        m = re.fullmatch(re.escape(self.netns_prefix) + r"([1-9][0-9]*)", name)
        return int(m.group(1)) if m else None

    def veth_index(self, name: str) -> int | None:
        """The node index of a host-side veth named by this layout, else None."""
        m = re.fullmatch(re.escape(self.veth_prefix) + r"([1-9][0-9]*)h", name)
        return int(m.group(1)) if m else None

    def check(self, n: int) -> None:
        """Raise ClusterSpecError unless ``n`` nodes fit this layout's names and subnet."""
        try:
            net = self.network()
        except ValueError as exc:
            raise ClusterSpecError(None, f"subnet {self.subnet!r} is not an IPv4 network") from exc
        if net.prefixlen > 24:
            raise ClusterSpecError(None, f"subnet {net} is smaller than a /24: use a /24")
        if n < 0 or n > self.max_nodes():
            raise ClusterSpecError(None, f"{n} nodes: choose between 0 and {self.max_nodes()}")
        for name in (self.bridge, self.host_veth(max(n, 1)), self.netns(max(n, 1))):
            if not _NAME_RE.match(name):
                raise ClusterSpecError(None, f"name {name!r} has characters ip(8) refuses")
        for name in (self.bridge, self.host_veth(max(n, 1))):
            if len(name) > IFNAMSIZ:
                raise ClusterSpecError(
                    None, f"interface name {name!r} is longer than {IFNAMSIZ}: shorten the prefix"
                )
        if self.veth_index(self.bridge) is not None:
            raise ClusterSpecError(None, f"bridge {self.bridge!r} looks like a node's veth")


DEFAULT_LAYOUT = Layout()


@dataclass(frozen=True)
class NodeSpec:
    """One node of the virtual cluster and where its pieces live."""

    name: str
    index: int
    netns: str
    address: str  # without prefix length
    host_veth: str
    cache_dir: Path
    roots_dir: Path
    pid_file: Path
    log_file: Path
    uts_file: Path  # bind mount of the node's UTS namespace (holds its hostname)

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns


@dataclass(frozen=True)
class ClusterSpec:
    """The recorded cluster: its layout, master address and nodes."""

    layout: Layout
    nodes: list[NodeSpec] = field(default_factory=list)
    cache_size: str = "512M"
    master_argv: list[str] | None = None
    node_argv: dict[str, list[str]] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return self.layout.bridge

    @property
    def master_address(self) -> str:
        return str(self.layout.master_address())


def cluster_dir(state_dir: Path) -> Path:
    return state_dir / "cluster"


def spec_path(state_dir: Path) -> Path:
    return cluster_dir(state_dir) / "cluster.json"


def master_pid_file(state_dir: Path) -> Path:
    return state_dir / "run" / "master.pid"


def master_log_file(state_dir: Path) -> Path:
    return cluster_dir(state_dir) / "master.log"


def node_spec(state_dir: Path, layout: Layout, index: int) -> NodeSpec:
    """Node ``index`` (from 1) of a cluster with ``layout`` under ``state_dir``."""
    home = cluster_dir(state_dir) / f"node{index}"
    return NodeSpec(
        name=f"node{index}",
        index=index,
        netns=layout.netns(index),
        address=str(layout.network().network_address + FIRST_NODE_OFFSET + index),
        host_veth=layout.host_veth(index),
        cache_dir=home / "cache",
        roots_dir=home / "roots",
        pid_file=home / "agent.pid",
        log_file=home / "agent.log",
        uts_file=home / "uts",
    )


def to_json(spec: ClusterSpec) -> str:
    doc: dict[str, Any] = {
        "version": SPEC_VERSION,
        "layout": asdict(spec.layout),
        "master_address": spec.master_address,
        "cache_size": spec.cache_size,
        "master_argv": spec.master_argv,
        "node_argv": spec.node_argv,
        "nodes": [
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(n).items()}
            for n in spec.nodes
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write(state_dir: Path, spec: ClusterSpec) -> bool:
    """Write ``cluster.json`` atomically if its content changes; True if it was written."""
    path = spec_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_if_changed(path, to_json(spec))


def read(state_dir: Path) -> ClusterSpec | None:
    """The recorded cluster, or None when there is no ``cluster.json``.

    Raises ClusterSpecError when the file exists but cannot be understood.
    """
    path = spec_path(state_dir)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClusterSpecError(
            path, f"unreadable ({exc}): 'beoctl cluster down' removes what it can find"
        ) from exc
    try:
        if doc["version"] != SPEC_VERSION:
            raise ValueError(f"version {doc['version']!r}, expected {SPEC_VERSION}")
        layout = Layout(**doc["layout"])
        nodes = [node_spec(state_dir, layout, int(n["index"])) for n in doc["nodes"]]
        master = doc.get("master_argv")
        return ClusterSpec(
            layout=layout,
            nodes=nodes,
            cache_size=str(doc["cache_size"]),
            master_argv=[str(a) for a in master] if master else None,
            node_argv={str(k): [str(a) for a in v] for k, v in doc["node_argv"].items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ClusterSpecError(
            path, f"not a cluster description ({exc}): 'beoctl cluster down' cleans up"
        ) from exc
