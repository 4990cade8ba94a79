"""The dnsmasq configuration for a cluster's DHCP: a pure function of nodes and settings.

dnsmasq serves DHCP only (``port=0``: no DNS) on the cluster interface only. Legacy
PXE and UEFI firmware get the iPXE binary from the master's own TFTP server (dnsmasq's
is off); a client already running iPXE (user class "iPXE") gets ``boot.ipxe`` from the
same TFTP server, a two-line script that chains to its per-node script over HTTP
(QEMU's NIC ROM is iPXE already, so TFTP stays in every boot's path). Static leases
live in a separate hosts file because a SIGHUP makes dnsmasq re-read that file but not
its main configuration (see :mod:`bootsvc.dnsmasq`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import Literal, Protocol

from bootsvc.errors import DhcpConfigError

Mode = Literal["static", "pool", "proxy"]
MODES: tuple[Mode, ...] = ("static", "pool", "proxy")

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_INTERFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1
_FILENAME = re.compile(r"^[A-Za-z0-9_./-]+$")
# One dnsmasq option value: no separator, quote, whitespace or comment character.
_URL = re.compile(r"^https?://[^\s,#\"']+$")


@dataclass(frozen=True)
class DhcpHost:
    """An accepted node's static lease: MAC (lower-case, colons), name, IPv4 address or None."""

    name: str
    mac: str
    address: IPv4Address | None


@dataclass(frozen=True)
class DhcpSettings:
    """The cluster's DHCP settings, read once at the edge.

    iPXE clients get ``ipxe_script`` (default ``boot.ipxe``) from the master's TFTP.
    ``ipxe_script_url`` is the older way, kept working: when set, iPXE clients get
    that HTTP URL instead (iPXE expands settings in it, so
    ``http://10.0.0.1:8080/boot/${mac:hexhyp}.ipxe`` names each node's own script).
    ``pool`` (first, last) is required in mode "pool" only.
    ``ra_prefix`` turns on IPv6 router advertisements (``enable-ra``, ``ra-only``)
    so iPXE does not wait ~16 s for IPv6; the interface needs an address in it.
    """

    interface: str
    network: IPv4Network
    master_address: IPv4Address
    state_dir: Path
    ipxe_script_url: str | None = None
    mode: Mode = "static"
    pool: tuple[IPv4Address, IPv4Address] | None = None
    lease_time: str = "12h"
    bios_boot_file: str = "undionly.kpxe"
    uefi_boot_file: str = "ipxe.efi"
    ra_prefix: IPv6Network | None = None
    ipxe_script: str = "boot.ipxe"


@dataclass(frozen=True)
class DnsmasqConfig:
    """The generated files: ``conf`` (main configuration) and ``hosts`` (static leases)."""

    conf: str
    hosts: str


class NodeRow(Protocol):
    """What :func:`hosts_from_nodes` reads of a ``launcher.state.models.Node``."""

    @property
    def name(self) -> str | None: ...
    @property
    def mac(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...
    @property
    def state(self) -> str: ...


def conf_path(state_dir: Path) -> Path:
    """Where the main configuration is written."""
    return state_dir / "dnsmasq.conf"


def hosts_path(state_dir: Path) -> Path:
    """Where the static leases (``--dhcp-hostsfile``) are written."""
    return state_dir / "dnsmasq.hosts"


def parse_mac(node: str, mac: str) -> str:
    """``mac`` in dnsmasq's form (lower-case, colons); raises DhcpConfigError naming ``node``."""
    canonical = mac.strip().lower().replace("-", ":")
    if not _MAC.match(canonical):
        raise DhcpConfigError(node, "MAC", mac, "expected six hex pairs like 52:54:00:12:34:56")
    if int(canonical[:2], 16) & 1:
        raise DhcpConfigError(node, "MAC", mac, "a multicast address cannot be a node's NIC")
    return canonical


def hosts_from_nodes(nodes: Iterable[NodeRow]) -> list[DhcpHost]:
    """The static leases of the accepted nodes among ``nodes``: those with a name and a MAC
    that are not ``pending`` (``beoctl node accept`` named them; ``beoctl node add --mac``).

    Pending nodes (no name yet) get no lease here: they take a pool address or none.
    A node without a MAC (added by name only) boots some other way and is left out.
    Raises DhcpConfigError naming the node when its MAC or address is malformed.
    """
    hosts: list[DhcpHost] = []
    for row in nodes:
        if row.state == "pending" or row.name is None or row.mac is None:
            continue
        label = row.name
        address: IPv4Address | None = None
        if row.address:
            try:
                parsed = ip_address(row.address)
            except ValueError as exc:
                raise DhcpConfigError(label, "address", row.address, "not an IP address") from exc
            if not isinstance(parsed, IPv4Address):
                raise DhcpConfigError(label, "address", row.address, "DHCP leases are IPv4")
            address = parsed
        hosts.append(DhcpHost(row.name, parse_mac(label, row.mac), address))
    return hosts


def _check_settings(s: DhcpSettings) -> None:
    if s.mode not in MODES:
        raise DhcpConfigError(None, "mode", s.mode, f"expected one of {', '.join(MODES)}")
    if not _INTERFACE.match(s.interface):
        raise DhcpConfigError(None, "interface", s.interface, "not an interface name")
    if s.master_address not in s.network:
        raise DhcpConfigError(None, "master address", str(s.master_address), _outside(s))
    if s.ipxe_script_url is not None and not _URL.match(s.ipxe_script_url):
        raise DhcpConfigError(
            None, "iPXE script URL", s.ipxe_script_url, "expected http(s)://, no ',' or spaces"
        )
    for what, name in (
        ("BIOS boot file", s.bios_boot_file),
        ("UEFI boot file", s.uefi_boot_file),
        ("iPXE script", s.ipxe_script),
    ):
        if not _FILENAME.match(name) or ".." in name.split("/"):
            raise DhcpConfigError(None, what, name, "expected a plain path under the TFTP root")
    if not re.match(r"^([0-9]+[smhdw]?|infinite)$", s.lease_time):
        raise DhcpConfigError(None, "lease time", s.lease_time, "expected like 12h or 3600")
    if s.mode == "pool":
        if s.pool is None:
            raise DhcpConfigError(None, "pool", None, "mode 'pool' needs a first and last address")
        first, last = s.pool
        for end in (first, last):
            if end not in s.network or end in (
                s.network.network_address,
                s.network.broadcast_address,
            ):
                raise DhcpConfigError(None, "pool address", str(end), _outside(s))
        if first > last:
            raise DhcpConfigError(None, "pool", f"{first}-{last}", "first address after last")
        if first <= s.master_address <= last:
            raise DhcpConfigError(None, "pool", f"{first}-{last}", "holds the master's address")


def _outside(s: DhcpSettings) -> str:
    return f"not a host address of {s.network}"


def _check_hosts(s: DhcpSettings, hosts: Sequence[DhcpHost]) -> None:
    names: dict[str, str] = {}
    macs: dict[str, str] = {}
    addresses: dict[IPv4Address, str] = {}
    for host in hosts:
        if not _HOSTNAME.match(host.name):
            raise DhcpConfigError(host.name, "name", host.name, "expected a hostname label")
        parse_mac(host.name, host.mac)
        if host.mac != host.mac.lower():
            raise DhcpConfigError(host.name, "MAC", host.mac, "expected lower case")
        for seen, key, what in ((names, host.name, "name"), (macs, host.mac, "MAC")):
            if key in seen:
                raise DhcpConfigError(host.name, what, key, f"also node {seen[key]}'s")
            seen[key] = host.name
        address = host.address
        if address is None:
            continue
        net = s.network
        if address not in net or address in (net.network_address, net.broadcast_address):
            raise DhcpConfigError(host.name, "address", str(address), _outside(s))
        if address == s.master_address:
            raise DhcpConfigError(host.name, "address", str(address), "is the master's address")
        if s.pool is not None and s.mode == "pool" and s.pool[0] <= address <= s.pool[1]:
            raise DhcpConfigError(
                host.name, "address", str(address), "inside the pool: pick one outside it"
            )
        if address in addresses:
            raise DhcpConfigError(
                host.name, "address", str(address), f"also node {addresses[address]}'s"
            )
        addresses[address] = host.name


def _boot_lines(s: DhcpSettings) -> list[str]:
    master = str(s.master_address)
    # What a client already running iPXE is sent: boot.ipxe from our TFTP (file name
    # and server), or the older per-node HTTP URL (no server: iPXE fetches it itself).
    script = f"{s.ipxe_script},{master}" if s.ipxe_script_url is None else s.ipxe_script_url
    ipxe_boot = f"{s.ipxe_script},,{master}" if s.ipxe_script_url is None else s.ipxe_script_url
    # Tags: "ipxe" from iPXE's user class; "efi" from the client architecture
    # (RFC 4578 option 93: 7 and 9 are x86-64 UEFI, 6 is IA32 UEFI).
    lines = [
        "dhcp-userclass=set:ipxe,iPXE",
        "dhcp-match=set:efi,option:client-arch,6",
        "dhcp-match=set:efi,option:client-arch,7",
        "dhcp-match=set:efi,option:client-arch,9",
    ]
    if s.mode == "proxy":
        # Proxy-DHCP answers with PXE boot services, not dhcp-boot (dnsmasq(8)).
        return [
            *lines,
            f"pxe-service=tag:!ipxe,x86PC,Beolaunch,{s.bios_boot_file},{master}",
            f"pxe-service=tag:!ipxe,BC_EFI,Beolaunch,{s.uefi_boot_file},{master}",
            f"pxe-service=tag:!ipxe,x86-64_EFI,Beolaunch,{s.uefi_boot_file},{master}",
            f"pxe-service=tag:ipxe,x86PC,Beolaunch,{script}",
            f"pxe-service=tag:ipxe,BC_EFI,Beolaunch,{script}",
            f"pxe-service=tag:ipxe,x86-64_EFI,Beolaunch,{script}",
        ]
    # The three dhcp-boot lines have disjoint tag sets, so exactly one applies.
    return [
        *lines,
        f"dhcp-boot=tag:!ipxe,tag:!efi,{s.bios_boot_file},,{master}",
        f"dhcp-boot=tag:!ipxe,tag:efi,{s.uefi_boot_file},,{master}",
        f"dhcp-boot=tag:ipxe,{ipxe_boot}",
    ]


def generate(settings: DhcpSettings, hosts: Sequence[DhcpHost]) -> DnsmasqConfig:
    """The dnsmasq files for ``hosts`` under ``settings``; the same input gives the same text.

    Raises DhcpConfigError, naming the node, for a bad MAC, name or address, a MAC,
    name or address used twice, or an address outside the subnet, the pool or
    equal to the master's; and naming the setting for bad settings.
    """
    s = settings
    _check_settings(s)
    _check_hosts(s, hosts)
    net = s.network
    lines = [
        "# Generated by Beolaunch (bootsvc.dhcp): edits are overwritten.",
        "port=0",
        f"interface={s.interface}",
        "bind-interfaces",
        "except-interface=lo",
        "no-resolv",
        "no-hosts",
        "log-dhcp",
        f"dhcp-leasefile={s.state_dir / 'dnsmasq.leases'}",
        f"pid-file={s.state_dir / 'dnsmasq.pid'}",
        f"dhcp-hostsfile={hosts_path(s.state_dir)}",
    ]
    if s.mode == "proxy":
        lines.append(f"dhcp-range={net.network_address},proxy")
    elif s.mode == "pool" and s.pool is not None:
        first, last = s.pool
        lines.append(f"dhcp-range={first},{last},{net.netmask},{s.lease_time}")
    else:
        lines.append(f"dhcp-range={net.network_address},static,{net.netmask},{s.lease_time}")
    if s.ra_prefix is not None:
        lines += [
            "enable-ra",
            f"dhcp-range={s.ra_prefix.network_address},ra-only,{s.ra_prefix.prefixlen}",
        ]
    lines += _boot_lines(s)
    # Proxy-DHCP hands out no addresses, so static leases would mean nothing there.
    host_lines = [] if s.mode == "proxy" else [_host_line(h) for h in hosts]
    return DnsmasqConfig("\n".join(lines) + "\n", "".join(f"{line}\n" for line in host_lines))


def _host_line(host: DhcpHost) -> str:
    if host.address is None:
        return f"{host.mac},{host.name}"
    return f"{host.mac},{host.name},{host.address}"
