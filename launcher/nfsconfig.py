"""``[nfs]``: the directories the master serves to its nodes over NFS (docs/nfs.md).

:func:`launcher.config.load` parses this table once (:func:`parse`) with the
``[boot]`` table it defaults from; ``beoctl nfs apply`` serves it
(:mod:`launcher.master.nfsserver`). A config without ``[nfs]`` serves nothing::

    [nfs]
    exports = ["/home"]           # absolute directories, each exported at its own path
    server = "auto"               # ganesha | kernel | auto (kernel where nfsd is usable)
    port = 2049
    address = "10.77.0.1"         # default: [boot] master_address; the only address served
    clients = "10.77.0.0/24"      # default: [boot] network; the only network admitted
    squash = "root_squash"        # the only value: see docs/nfs.md, "Security"

Only the form of each value is checked here (the config is read by every
command); that each export exists, is a directory and no symlink is checked
when it is served.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Literal

from bootsvc.settings import BootSettings
from launcher.errors import ConfigError

Server = Literal["ganesha", "kernel", "auto"]
SERVERS: tuple[Server, ...] = ("ganesha", "kernel", "auto")
DEFAULT_EXPORTS: tuple[str, ...] = ("/home",)
DEFAULT_PORT = 2049
#: Root on a node is mapped to nobody; not a choice (docs/nfs.md, "Security").
SQUASH = "root_squash"
KEYS = ("exports", "server", "port", "address", "clients", "squash")
# What a node's mount source (bootsvc.mounts) and ganesha's quoted strings both
# take: printable, no space, comma, quote or backslash.
_EXPORT = re.compile(r"^/[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]*$")


@dataclass(frozen=True)
class NfsSettings:
    """A validated ``[nfs]`` table, its defaults from ``[boot]`` filled in."""

    address: IPv4Address | IPv6Address
    clients: IPv4Network | IPv6Network
    exports: tuple[str, ...] = DEFAULT_EXPORTS
    server: Server = "auto"
    port: int = DEFAULT_PORT
    squash: str = SQUASH


def parse(
    path: Path, table: Mapping[str, Any], boot: BootSettings | None, state_dir: Path
) -> NfsSettings:
    """Validate a decoded ``[nfs]`` table; ``boot`` gives ``address`` and ``clients``
    their defaults. Raises ConfigError naming ``nfs.KEY`` and what to write."""
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(
            path, f"nfs.{unknown[0]}", f"unknown key; expected one of {', '.join(KEYS)}"
        )
    exports = _exports(path, table.get("exports", list(DEFAULT_EXPORTS)), state_dir)
    server = table.get("server", "auto")
    if server not in SERVERS:
        raise ConfigError(
            path, "nfs.server", f"expected one of {', '.join(SERVERS)}, got {server!r}"
        )
    port = table.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(path, "nfs.port", f"expected an integer port 1-65535, got {port!r}")
    squash = table.get("squash", SQUASH)
    if squash != SQUASH:
        raise ConfigError(
            path,
            "nfs.squash",
            f"only {SQUASH!r} is served (a node's root must not act as the server's root; "
            f"docs/nfs.md), got {squash!r}: remove the key",
        )
    return NfsSettings(
        _address(path, table, boot),
        _clients(path, table, boot),
        exports,
        server,
        port,
    )


def render(settings: NfsSettings, boot: BootSettings | None) -> dict[str, Any]:
    """The ``[nfs]`` table of ``settings`` (inverse of :func:`parse`): ``exports``
    always, the other keys where they differ from their defaults."""
    table: dict[str, Any] = {"exports": list(settings.exports)}
    if settings.server != "auto":
        table["server"] = settings.server
    if settings.port != DEFAULT_PORT:
        table["port"] = settings.port
    if boot is None or settings.address != boot.master_address:
        table["address"] = str(settings.address)
    if boot is None or settings.clients != boot.network:
        table["clients"] = str(settings.clients)
    return table


def _exports(path: Path, value: Any, state_dir: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            path, "nfs.exports", f"expected a list of absolute directories, got {value!r}"
        )
    out: list[str] = []
    for item in value:
        if not _EXPORT.match(item) or posixpath.normpath(item) != item:
            raise ConfigError(
                path,
                "nfs.exports",
                f"expected a normalised absolute path without spaces, commas, quotes or "
                f"backslashes, got {item!r}",
            )
        if item == "/":
            raise ConfigError(path, "nfs.exports", "'/' would serve the master's whole tree")
        state = str(state_dir)
        if item == state or item.startswith(state + "/") or state.startswith(item + "/"):
            raise ConfigError(
                path,
                "nfs.exports",
                f"{item} holds or is inside the state dir {state} (its secret and "
                "database): export another directory",
            )
        if item in out:
            raise ConfigError(path, "nfs.exports", f"{item} is listed twice")
        out.append(item)
    return tuple(out)


def _address(
    path: Path, table: Mapping[str, Any], boot: BootSettings | None
) -> IPv4Address | IPv6Address:
    if "address" not in table:
        if boot is None:
            raise ConfigError(
                path,
                "nfs.address",
                "no [boot] master_address to default to: set nfs.address to the "
                "master's address on the cluster network",
            )
        return boot.master_address
    value = table["address"]
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return ip_address(value)
    except ValueError:
        raise ConfigError(
            path, "nfs.address", f"expected the master's IPv4 or IPv6 address, got {value!r}"
        ) from None


def _clients(
    path: Path, table: Mapping[str, Any], boot: BootSettings | None
) -> IPv4Network | IPv6Network:
    if "clients" not in table:
        if boot is None:
            raise ConfigError(
                path,
                "nfs.clients",
                "no [boot] network to default to: set nfs.clients to the cluster "
                "network, such as '10.77.0.0/24'",
            )
        return boot.network
    value = table["clients"]
    try:
        if not isinstance(value, str):
            raise ValueError(f"not a string: {value!r}")
        network = ip_network(value)
    except ValueError as exc:
        raise ConfigError(
            path, "nfs.clients", f"expected one network such as '10.77.0.0/24': {exc}"
        ) from None
    if network.prefixlen == 0:
        raise ConfigError(
            path, "nfs.clients", f"{value} admits every address: give the cluster network"
        )
    return network
