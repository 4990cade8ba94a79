"""Beolaunch's Slurm settings: the optional ``[slurm]`` table of config.toml.

:func:`launcher.config.load` hands the decoded table to :func:`parse` and passes the
result down as ``config.slurm``. Every key is optional::

    [slurm]
    cluster_name = "beolaunch"     # ClusterName of the virtual cluster's Slurm
    partition = "beolaunch"        # its one partition (the default one)
    slurmctld_port = 6817          # give each virtual cluster on a machine its own
    slurmd_port = 6818
    prolog_timeout = 120           # seconds: PrologEpilogTimeout
    node_memory_mb = 1000          # RealMemory of each virtual node
    agent_socket = "/run/beolaunch/agent.sock"  # the node agent's local socket; %n: node
                                   # name (default: STATE/cluster/%n/agent.sock)
    release_held = 3               # times the master releases a job Slurm held
    unreported_grace = 60          # seconds a job may be over in Slurm before the
                                   # master ends its row without every epilog's report
    submit = true                  # beosub submits through Slurm (unset: when
                                   # STATE/slurm/slurm.conf exists, i.e. up --slurm)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from launcher.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class SlurmSettings:
    """What Beolaunch puts into the slurm.conf it generates."""

    cluster_name: str = "beolaunch"
    partition: str = "beolaunch"
    slurmctld_port: int = 6817
    slurmd_port: int = 6818
    #: seconds a prolog or epilog may run before slurmd kills it (and drains the node)
    prolog_timeout: int = 120
    node_memory_mb: int = 1000
    #: the node agent's local socket as the prolog, epilog and steps find it;
    #: ``%n`` is the node's name (SLURMD_NODENAME); "" means STATE/cluster/%n/agent.sock
    agent_socket: str = ""
    #: how many times the master releases a Beolaunch job Slurm requeued held
    release_held: int = 3
    #: seconds a job may be over in Slurm before the master ends its row though a
    #: node's epilog never reported (its agent was gone): launcher.master.unreported
    unreported_grace: int = 60
    #: beosub's default scheduler: True Slurm, False its own; None: Slurm when
    #: this state dir's slurm.conf exists (see launcher.slurm.submit.use_slurm)
    submit: bool | None = None


_INT_KEYS = {
    "slurmctld_port",
    "slurmd_port",
    "prolog_timeout",
    "node_memory_mb",
    "release_held",
    "unreported_grace",
}
_PORT_KEYS = {"slurmctld_port", "slurmd_port"}


def parse(path: Path, table: Mapping[str, Any]) -> SlurmSettings:
    """Validate a decoded ``[slurm]`` table; raises ConfigError naming the bad key."""
    known = {f.name for f in fields(SlurmSettings)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            path, f"slurm.{unknown[0]}", f"unknown key; expected one of {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "submit":
            if not isinstance(value, bool):
                raise ConfigError(path, "slurm.submit", f"expected true or false, got {value!r}")
        elif key == "agent_socket":
            if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
                raise ConfigError(
                    path, "slurm.agent_socket", f"expected an absolute path, got {value!r}"
                )
        elif key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(path, f"slurm.{key}", f"expected an integer >= 1, got {value!r}")
            if key in _PORT_KEYS and value > 65535:
                raise ConfigError(path, f"slurm.{key}", f"expected a port number, got {value}")
        elif not isinstance(value, str) or not _NAME_RE.match(value):
            raise ConfigError(
                path, f"slurm.{key}", f"expected a name of letters, digits, - and _, got {value!r}"
            )
        values[key] = value
    if values.get("slurmctld_port", 6817) == values.get("slurmd_port", 6818):
        raise ConfigError(path, "slurm.slurmd_port", "must differ from slurm.slurmctld_port")
    return SlurmSettings(**values)


def agent_socket(settings: SlurmSettings, state_dir: Path, node: str) -> str:
    """The local socket of ``node``'s agent (``%n`` replaced by the node's name)."""
    pattern = settings.agent_socket or str(state_dir.absolute() / "cluster" / "%n" / "agent.sock")
    return pattern.replace("%n", node)


def render(settings: SlurmSettings) -> dict[str, Any]:
    """The ``[slurm]`` table of ``settings`` (inverse of :func:`parse`): the keys
    that differ from their defaults."""
    default = asdict(SlurmSettings())
    return {k: v for k, v in asdict(settings).items() if v != default[k]}
