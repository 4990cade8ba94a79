"""The cluster network: a bridge on the host, one namespace and veth pair per node.

Everything goes through ``ip`` (iproute2). Each ``ensure_*`` checks first and
only adds what is missing, so running it twice changes nothing. Removal only
ever touches names the layout produces (exact patterns, not bare prefixes).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import psutil

from launcher.cluster.spec import NETNS_DIR, Layout, NodeSpec
from launcher.errors import ClusterCommandError

IP_ADVICE = "is iproute2 installed and are you root?"


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip [-n NETNS] ARGS``; its stdout. Raises ClusterCommandError on failure."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ClusterCommandError(argv, 127, str(exc), IP_ADVICE) from exc
    if check and done.returncode != 0:
        raise ClusterCommandError(argv, done.returncode, done.stderr, IP_ADVICE)
    return done.stdout


def _ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    out = ip("-j", *args, netns=netns)
    data = json.loads(out) if out.strip() else []
    return [d for d in data if isinstance(d, dict)]


def list_netns() -> list[str]:
    """Names of the namespaces ``ip netns`` knows (files in /run/netns)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def links(netns: str | None = None) -> dict[str, dict[str, Any]]:
    """The links of the host (or of ``netns``) by name, as ``ip -j -d link`` reports them."""
    return {d["ifname"]: d for d in _ip_json("-d", "link", "show", netns=netns) if "ifname" in d}


def _addresses(dev: str, netns: str | None = None) -> set[str]:
    found: set[str] = set()
    for d in _ip_json("-4", "addr", "show", "dev", dev, netns=netns):
        for a in d.get("addr_info", []):
            found.add(f"{a['local']}/{a['prefixlen']}")
    return found


def _is_up(link: dict[str, Any]) -> bool:
    return "UP" in link.get("flags", [])


def ensure_bridge(layout: Layout) -> None:
    """The bridge exists, holds the master address and is up."""
    have = links().get(layout.bridge)
    if have is None:
        ip("link", "add", layout.bridge, "type", "bridge")
        have = {}
    elif have.get("linkinfo", {}).get("info_kind") != "bridge":
        raise ClusterCommandError(
            ["ip", "link", "show", layout.bridge],
            0,
            "exists and is not a bridge",
            f"remove it (ip link del {layout.bridge}) or choose another bridge name",
        )
    addr = f"{layout.master_address()}/{layout.network().prefixlen}"
    if addr not in _addresses(layout.bridge):
        ip("addr", "add", addr, "dev", layout.bridge)
    if not _is_up(have):
        ip("link", "set", layout.bridge, "up")


def ensure_node(layout: Layout, node: NodeSpec) -> None:
    """Node ``node``'s namespace, veth pair on the bridge, address, lo and default route."""
    if node.netns not in list_netns():
        ip("netns", "add", node.netns)
    host = links().get(node.host_veth)
    inside = links(node.netns)
    if host is None and "eth0" in inside:
        # Half a pair from an interrupted run: the host end is gone, start over.
        ip("link", "del", "eth0", netns=node.netns)
    elif host is not None and "eth0" not in inside:
        # The host end leads into an old namespace a process kept alive: start over.
        ip("link", "del", node.host_veth)
        host = None
    if host is None:
        # Create the node end directly inside the namespace: no temporary host name.
        ip(
            "link",
            "add",
            node.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.netns,
        )
        host = links()[node.host_veth]
        inside = links(node.netns)
    if host.get("master") != layout.bridge:
        ip("link", "set", node.host_veth, "master", layout.bridge)
    if not _is_up(host):
        ip("link", "set", node.host_veth, "up")
    addr = f"{node.address}/{layout.network().prefixlen}"
    if addr not in _addresses("eth0", netns=node.netns):
        ip("addr", "add", addr, "dev", "eth0", netns=node.netns)
    for dev in ("lo", "eth0"):
        if not _is_up(inside.get(dev, {})):
            ip("link", "set", dev, "up", netns=node.netns)
    gateway = str(layout.master_address())
    routes = _ip_json("-4", "route", "show", "default", netns=node.netns)
    if not any(r.get("gateway") == gateway for r in routes):
        ip("route", "replace", "default", "via", gateway, "dev", "eth0", netns=node.netns)


def netns_pids(netns: str) -> list[int]:
    """Pids of processes whose network namespace is ``netns`` (compared by inode)."""
    try:
        want = os.stat(NETNS_DIR / netns)
    except OSError:
        return []
    found = []
    for pid in psutil.pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (want.st_ino, want.st_dev):
            found.append(pid)
    return found


def remove_node(layout: Layout, netns: str | None, host_veth: str | None) -> list[str]:
    """Delete a node's veth pair and namespace if present; the names removed."""
    removed = []
    if host_veth and host_veth in links():
        ip("link", "del", host_veth)
        removed.append(host_veth)
    if netns and netns in list_netns():
        ip("netns", "del", netns)
        removed.append(netns)
    return removed


def remove_bridge(layout: Layout) -> bool:
    """Delete the layout's bridge if present; True if it was there."""
    if layout.bridge in links():
        ip("link", "del", layout.bridge)
        return True
    return False


def leftovers(layout: Layout) -> tuple[list[str], list[str]]:
    """Namespaces and host veths named by ``layout``, whatever ``cluster.json`` says."""
    spaces = [n for n in list_netns() if layout.netns_index(n) is not None]
    veths = [n for n in links() if layout.veth_index(n) is not None]
    return spaces, veths
