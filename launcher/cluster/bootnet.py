"""A boot network in a network namespace: a bridge for the master and a tap per QEMU node.

Tests, benchmarks and the demo PXE boot virtual nodes on it. Everything lives in
one namespace of our own (``ip netns add``), so a DHCP server, a router
advertisement or a broadcast never reaches the host's networks, and removing the
namespace removes the bridge and every tap. Programs run in it through
``nsenter --net`` (not ``ip netns exec``, which also remounts ``/sys``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from launcher.cluster.netns import ip as _ip
from launcher.errors import ClusterCommandError

BRIDGE = "br0"


@dataclass(frozen=True)
class BootNetwork:
    """Namespace ``netns`` with bridge ``br0`` at the first address of ``network``."""

    netns: str
    network: IPv4Network

    @property
    def master_address(self) -> IPv4Address:
        return self.network.network_address + 1

    @property
    def bridge(self) -> str:
        return BRIDGE

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    def address(self, index: int) -> IPv4Address:
        """The address of node ``index`` (1 based): ``.10``, ``.11`` ..."""
        return self.network.network_address + 9 + index

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in the namespace's network (the host's mounts, pids and users)."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def create(self) -> None:
        """Make the namespace, its loopback and the bridge with the master's address.

        Raises ClusterCommandError naming the failed ``ip`` command.
        """
        _ip("netns", "add", self.netns)
        try:
            _ip("-n", self.netns, "link", "set", "lo", "up")
            _ip("-n", self.netns, "link", "add", BRIDGE, "type", "bridge", "forward_delay", "0")
            iface = IPv4Interface(f"{self.master_address}/{self.network.prefixlen}")
            _ip("-n", self.netns, "addr", "add", str(iface), "dev", BRIDGE)
            _ip("-n", self.netns, "link", "set", BRIDGE, "up")
        except ClusterCommandError:
            self.remove()
            raise

    def add_tap(self, name: str) -> str:
        """A tap device on the bridge, up, for QEMU's ``-netdev tap,ifname=NAME``."""
        _ip("-n", self.netns, "tuntap", "add", "dev", name, "mode", "tap")
        _ip("-n", self.netns, "link", "set", name, "master", BRIDGE, "up")
        return name

    def remove(self) -> None:
        """Remove the namespace (with its bridge and taps); a missing one is fine."""
        if self.netns_path.exists():
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one (to stop the ones we started)."""
        try:
            target = os.stat(self.netns_path)
        except OSError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                found.append(int(entry))
        return found
