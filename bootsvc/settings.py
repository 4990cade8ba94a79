"""The ``[boot]`` table of the master's config file: the cluster network it boots nodes on.

``launcher.config`` reads the file once and hands the decoded table to :func:`parse`,
which returns a frozen :class:`BootSettings` or raises :class:`BootSettingsError`
naming the key; no ``[boot]`` table means the master boots nobody over DHCP/TFTP
and serves only its boot HTTP service. Example::

    [boot]
    interface = "eth1"
    network = "10.77.0.0/24"
    master_address = "10.77.0.1"
    mode = "pool"                 # static | pool | proxy
    pool_first = "10.77.0.100"
    pool_last = "10.77.0.199"
    ra = true                     # a bare IPv6 router advertisement (iPXE waits less)
    ipxe_dir = "/usr/lib/ipxe"    # undionly.kpxe, ipxe.efi (Debian package ipxe)
    extra_kernel_args = "quiet"
    ticket_ttl_s = 300
    max_pending = 256             # unaccepted MACs kept at once
    new_nodes_per_minute = 60     # new pending nodes, all sources together
    new_nodes_per_address_per_minute = 4

    [[boot.mounts]]               # site filesystems stage 3 mounts (bootsvc/mounts.py)
    source = "{master}:/home"
    target = "/home"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import Any

from bootsvc.dhcp import MODES, DhcpSettings, Mode
from bootsvc.errors import BootSettingsError
from bootsvc.mounts import SiteMount, parse_list
from bootsvc.mounts import render as render_mounts

DEFAULT_IPXE_DIR = Path("/usr/lib/ipxe")
#: Seconds a boot ticket in an iPXE script stays valid. Stage 3 enrolls 25-40 s after
#: the script under QEMU/TCG (56 s for the slowest of four booting at once on 2 cores);
#: 300 s leaves five times that, and a master away for a few minutes while stage 2
#: retries, while keeping short the time a ticket read off the wire is worth anything.
DEFAULT_TICKET_TTL_S = 300
#: Pending (unaccepted) nodes kept at once: a new MAC beyond it is refused (503).
DEFAULT_MAX_PENDING = 256
#: New pending nodes per minute from all sources together (a token bucket of that size).
DEFAULT_NEW_NODES_PER_MINUTE = 60
#: New pending nodes per minute from one source address: a machine has a NIC or a few.
DEFAULT_NEW_NODES_PER_ADDRESS_PER_MINUTE = 4
KEYS = (
    "interface",
    "network",
    "master_address",
    "mode",
    "pool_first",
    "pool_last",
    "ra",
    "ipxe_dir",
    "extra_kernel_args",
    "ticket_ttl_s",
    "max_pending",
    "new_nodes_per_minute",
    "new_nodes_per_address_per_minute",
    "mounts",
)
_INTERFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1
# Kernel arguments go into an iPXE script line: no newline, no iPXE setting expansion.
_KERNEL_ARGS = re.compile(r"^[^\n\r${}]*$")


@dataclass(frozen=True)
class BootSettings:
    """A validated ``[boot]`` table."""

    interface: str
    network: IPv4Network
    master_address: IPv4Address
    mode: Mode = "static"
    pool: tuple[IPv4Address, IPv4Address] | None = None
    ra: bool = False
    ipxe_dir: Path = DEFAULT_IPXE_DIR
    extra_kernel_args: str = ""
    ticket_ttl_s: int = DEFAULT_TICKET_TTL_S
    max_pending: int = DEFAULT_MAX_PENDING
    new_nodes_per_minute: int = DEFAULT_NEW_NODES_PER_MINUTE
    new_nodes_per_address_per_minute: int = DEFAULT_NEW_NODES_PER_ADDRESS_PER_MINUTE
    #: ``[[boot.mounts]]``; None: none given (each ``[nfs]`` export, at its own path)
    mounts: tuple[SiteMount, ...] | None = None

    def dhcp(self, state_dir: Path) -> DhcpSettings:
        """The DHCP settings for dnsmasq, its files under ``state_dir``; iPXE clients get
        ``boot.ipxe`` from the master's TFTP."""
        return DhcpSettings(
            self.interface,
            self.network,
            self.master_address,
            state_dir,
            mode=self.mode,
            pool=self.pool,
        )

    def in_pool(self, address: IPv4Address) -> bool:
        return self.pool is not None and self.pool[0] <= address <= self.pool[1]

    def next_free_address(self, used: Iterable[str | None]) -> IPv4Address | None:
        """The lowest host address of the network that is not the master's, not in the
        pool and not in ``used``; None when the network is full."""
        taken = {str(a) for a in used if a}
        for address in self.network.hosts():
            if address == self.master_address or self.in_pool(address):
                continue
            if str(address) not in taken:
                return address
        return None


def parse(table: Mapping[str, Any]) -> BootSettings:
    """Validate a decoded ``[boot]`` table; raises BootSettingsError naming the bad key."""
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise BootSettingsError(f"boot.{unknown[0]}", f"unknown key; expected {', '.join(KEYS)}")
    interface = _string(table, "interface")
    if not _INTERFACE.match(interface):
        raise BootSettingsError("boot.interface", f"not an interface name: {interface!r}")
    network = _network(table)
    master = _address(table, "master_address", network)
    mode = table.get("mode", "static")
    if mode not in MODES:
        raise BootSettingsError("boot.mode", f"expected one of {', '.join(MODES)}, got {mode!r}")
    pool = _pool(table, network, master, mode)
    ra = table.get("ra", False)
    if not isinstance(ra, bool):
        raise BootSettingsError("boot.ra", f"expected true or false, got {ra!r}")
    raw_dir = table.get("ipxe_dir", str(DEFAULT_IPXE_DIR))
    if not isinstance(raw_dir, str) or not Path(raw_dir).is_absolute():
        raise BootSettingsError("boot.ipxe_dir", f"expected an absolute path, got {raw_dir!r}")
    ipxe_dir = Path(raw_dir)
    extra = table.get("extra_kernel_args", "")
    if not isinstance(extra, str) or not _KERNEL_ARGS.match(extra):
        raise BootSettingsError(
            "boot.extra_kernel_args",
            f"expected one line without '$', '{{' or '}}', got {extra!r}",
        )
    return BootSettings(
        interface,
        network,
        master,
        mode,
        pool,
        ra,
        ipxe_dir,
        extra.strip(),
        ticket_ttl_s=_positive(table, "ticket_ttl_s", DEFAULT_TICKET_TTL_S, "seconds"),
        max_pending=_positive(table, "max_pending", DEFAULT_MAX_PENDING, "a count"),
        new_nodes_per_minute=_positive(
            table, "new_nodes_per_minute", DEFAULT_NEW_NODES_PER_MINUTE, "a count"
        ),
        new_nodes_per_address_per_minute=_positive(
            table,
            "new_nodes_per_address_per_minute",
            DEFAULT_NEW_NODES_PER_ADDRESS_PER_MINUTE,
            "a count",
        ),
        mounts=parse_list(table["mounts"]) if "mounts" in table else None,
    )


def render(settings: BootSettings) -> dict[str, Any]:
    """The ``[boot]`` table of ``settings`` (inverse of :func:`parse`)."""
    table: dict[str, Any] = {
        "interface": settings.interface,
        "network": str(settings.network),
        "master_address": str(settings.master_address),
        "mode": settings.mode,
    }
    if settings.pool is not None:
        table["pool_first"], table["pool_last"] = (str(a) for a in settings.pool)
    table |= {
        "ra": settings.ra,
        "ipxe_dir": str(settings.ipxe_dir),
        "extra_kernel_args": settings.extra_kernel_args,
        "ticket_ttl_s": settings.ticket_ttl_s,
        "max_pending": settings.max_pending,
        "new_nodes_per_minute": settings.new_nodes_per_minute,
        "new_nodes_per_address_per_minute": settings.new_nodes_per_address_per_minute,
    }
    if settings.mounts is not None:
        table["mounts"] = render_mounts(settings.mounts)
    return table


def _positive(table: Mapping[str, Any], key: str, default: int, what: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BootSettingsError(f"boot.{key}", f"expected {what} >= 1, got {value!r}")
    return value


def _string(table: Mapping[str, Any], key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise BootSettingsError(f"boot.{key}", f"expected a non-empty string, got {value!r}")
    return value


def _network(table: Mapping[str, Any]) -> IPv4Network:
    value = _string(table, "network")
    try:
        network = ip_network(value)
    except ValueError as exc:
        raise BootSettingsError(
            "boot.network", f"expected an IPv4 network like 10.77.0.0/24: {exc}"
        ) from None
    if not isinstance(network, IPv4Network) or network.prefixlen > 30:
        raise BootSettingsError(
            "boot.network", f"expected an IPv4 network of /30 or larger, got {value!r}"
        )
    return network


def _address(table: Mapping[str, Any], key: str, network: IPv4Network) -> IPv4Address:
    value = _string(table, key)
    try:
        address = ip_address(value)
    except ValueError:
        raise BootSettingsError(f"boot.{key}", f"expected an IPv4 address, got {value!r}") from None
    if (
        not isinstance(address, IPv4Address)
        or address not in network
        or address in (network.network_address, network.broadcast_address)
    ):
        raise BootSettingsError(f"boot.{key}", f"{value!r} is not a host address of {network}")
    return address


def _pool(
    table: Mapping[str, Any], network: IPv4Network, master: IPv4Address, mode: str
) -> tuple[IPv4Address, IPv4Address] | None:
    given = [k for k in ("pool_first", "pool_last") if k in table]
    if not given:
        if mode == "pool":
            raise BootSettingsError("boot.pool_first", "mode 'pool' needs pool_first and pool_last")
        return None
    first = _address(table, "pool_first", network)
    last = _address(table, "pool_last", network)
    if first > last:
        raise BootSettingsError("boot.pool_last", f"{last} comes before pool_first {first}")
    if first <= master <= last:
        raise BootSettingsError("boot.pool_first", f"the pool {first}-{last} holds master_address")
    return first, last
