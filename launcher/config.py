"""The cluster configuration: where state lives, where each service listens, and
every optional table (:data:`TABLES`).

The one reader of config.toml: read once at the edge (the console script),
validated fully, and passed down as a frozen :class:`Config` whose sections are
typed. Each section's parser lives beside its users (``launcher.slurm.settings``,
``launcher.envconfig``, ``launcher.master.jobsettings``, ``bootsvc.settings``,
``launcher.nfsconfig``) and
takes the decoded table; this module calls them, so a bad value anywhere is one
ConfigError naming the file, the dotted key and what was expected. Every command
finds the file the same way: the ``--config`` flag, then ``$BEOLAUNCH_CONFIG``,
then :data:`DEFAULT_CONFIG`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bootsvc import settings as boot_settings
from bootsvc.errors import BootSettingsError
from bootsvc.settings import BootSettings
from launcher import envconfig, nfsconfig
from launcher.envconfig import EnvRootSettings
from launcher.errors import ConfigError, ConfigMissingError
from launcher.master import jobsettings
from launcher.master.jobsettings import JobsSettings
from launcher.nfsconfig import NfsSettings
from launcher.slurm import settings as slurm_settings
from launcher.slurm.settings import SlurmSettings

DEFAULT_STATE_DIR = Path("/var/lib/beolaunch")
CONFIG_NAME = "config.toml"
DEFAULT_CONFIG = DEFAULT_STATE_DIR / CONFIG_NAME
CONFIG_ENV = "BEOLAUNCH_CONFIG"

# Each service has its own address and port (the seed: "each type of service has
# its own server IP address and port"), so one can later move to a replica.
SERVICES: tuple[str, ...] = ("control", "objects", "logs", "boot_http", "tftp", "status")
DEFAULT_PORTS: Mapping[str, int] = {
    "control": 4870,
    "objects": 4871,
    "logs": 4872,
    "boot_http": 4873,
    "tftp": 69,  # PXE firmware asks port 69; tests override it.
    # read-only: the status pages and /metrics (docs/observability.md); not 4874,
    # the nodes' peer port (DEFAULT_PEER_PORT), which a node on the master's host uses
    "status": 4875,
}
#: Services a config may leave out (configs written before they existed), and
#: where they then listen: loopback only, so an upgrade exposes nothing new.
OPTIONAL_SERVICES: Mapping[str, str] = {"status": "127.0.0.1"}


@dataclass(frozen=True)
class ServiceAddress:
    """Where one master service listens."""

    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


#: Port of each node's peer object service (its cache served to other nodes).
DEFAULT_PEER_PORT = 4874
#: Children per node in a job's distribution tree.
DEFAULT_FANOUT = 2


@dataclass(frozen=True)
class PeerSettings:
    """``[peers]`` (optional): nodes fetch objects from each other."""

    #: each node agent serves its cache on this port; 0: nodes serve no peers
    port: int = DEFAULT_PEER_PORT
    fanout: int = DEFAULT_FANOUT


@dataclass(frozen=True)
class ClusterSettings:
    """``[cluster]`` (optional): the virtual cluster's names and subnet; None keeps
    the default of :class:`launcher.cluster.spec.Layout` (``beoctl init --isolated``
    writes all four)."""

    bridge: str | None = None
    veth_prefix: str | None = None
    netns_prefix: str | None = None
    subnet: str | None = None


#: The tables a config may have: ``state`` and ``services`` must be there.
TABLES: tuple[str, ...] = (
    "state",
    "services",
    "peers",
    "jobs",
    "store",
    "slurm",
    "boot",
    "envroot",
    "cluster",
    "nfs",
)


@dataclass(frozen=True)
class Config:
    """A validated configuration; ``path`` is the file it was read from.

    An absent optional table gets its defaults (``boot``: None, the master boots
    nobody); ``given`` names the optional tables the file has (a ``[slurm]`` table
    means a real cluster's Slurm, even with every key at its default)."""

    path: Path
    state_dir: Path
    database_url: str
    secret_file: Path
    services: Mapping[str, ServiceAddress]
    peers: PeerSettings = PeerSettings()
    jobs: JobsSettings = field(default_factory=JobsSettings)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    boot: BootSettings | None = None
    envroot: EnvRootSettings = field(default_factory=EnvRootSettings)
    cluster: ClusterSettings = ClusterSettings()
    #: ``[nfs]``; None: the master serves no NFS
    nfs: NfsSettings | None = None
    given: frozenset[str] = frozenset()

    def service(self, name: str) -> ServiceAddress:
        return self.services[name]

    @property
    def store_dir(self) -> Path:
        """The master's content-addressed object store (cachefs.store layout)."""
        return self.state_dir / "store"


def default_database_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'state.db'}"


def locate(flag: str | None, environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """Return the config path to use and how it was chosen (flag, env or default)."""
    env = os.environ if environ is None else environ
    if flag:
        return Path(flag), "from --config"
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), f"from ${CONFIG_ENV}"
    return DEFAULT_CONFIG, "the default"


def load(flag: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Find and read the configuration.

    Raises ConfigMissingError when there is no file, ConfigError when it cannot be
    read or a value is wrong (naming the file, the key and the expected form).
    """
    path, how = locate(flag, environ)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigMissingError(path, how) from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from exc
    return parse(path, data)


def parse(path: Path, data: Mapping[str, Any]) -> Config:
    """Validate a decoded TOML document into a Config.

    Raises ConfigError naming ``path``, the dotted key and what was expected."""
    unknown_tables = sorted(set(data) - set(TABLES))
    if unknown_tables:
        raise ConfigError(
            path, unknown_tables[0], f"unknown table; expected one of {', '.join(TABLES)}"
        )
    state = _table(path, data, "state")
    state_dir = _abs_path(path, state, "state.dir")
    database = _string(path, state, "state.database")
    if "://" not in database:
        raise ConfigError(
            path,
            "state.database",
            "expected an SQLAlchemy URL such as "
            f"'sqlite:////var/lib/beolaunch/state.db', got {database!r}",
        )
    secret_file = _abs_path(path, state, "state.secret_file")
    services_table = _table(path, data, "services")
    services: dict[str, ServiceAddress] = {}
    for name in SERVICES:
        if name in OPTIONAL_SERVICES and name not in services_table:
            services[name] = ServiceAddress(OPTIONAL_SERVICES[name], DEFAULT_PORTS[name])
            continue
        table = _table(path, services_table, f"services.{name}")
        services[name] = ServiceAddress(
            _address(path, table, f"services.{name}.address"),
            _port(path, table, f"services.{name}.port"),
        )
    unknown = sorted(set(services_table) - set(SERVICES))
    if unknown:
        raise ConfigError(
            path,
            f"services.{unknown[0]}",
            f"unknown service; expected one of {', '.join(SERVICES)}",
        )
    try:
        boot = boot_settings.parse(_table(path, data, "boot")) if "boot" in data else None
    except BootSettingsError as exc:
        raise ConfigError(path, exc.key, exc.problem) from exc
    return Config(
        path,
        state_dir,
        database,
        secret_file,
        services,
        _peers(path, data),
        jobsettings.parse(path, _optional(path, data, "jobs"), _optional(path, data, "store")),
        slurm_settings.parse(path, _optional(path, data, "slurm")),
        boot,
        envconfig.parse(path, _optional(path, data, "envroot")),
        _cluster(path, _optional(path, data, "cluster")),
        nfsconfig.parse(path, _table(path, data, "nfs"), boot, state_dir)
        if "nfs" in data
        else None,
        frozenset(data) - {"state", "services"},
    )


def _peers(path: Path, data: Mapping[str, Any]) -> PeerSettings:
    if "peers" not in data:
        return PeerSettings()
    table = _table(path, data, "peers")
    port = table.get("port", DEFAULT_PEER_PORT)
    if port != 0:
        port = _port(path, {"port": port}, "peers.port")
    fanout = table.get("fanout", DEFAULT_FANOUT)
    if isinstance(fanout, bool) or not isinstance(fanout, int) or fanout < 1:
        raise ConfigError(path, "peers.fanout", f"expected an integer >= 1, got {fanout!r}")
    unknown = sorted(set(table) - {"port", "fanout"})
    if unknown:
        raise ConfigError(path, f"peers.{unknown[0]}", "unknown key; expected port or fanout")
    return PeerSettings(port, fanout)


def _cluster(path: Path, table: Mapping[str, Any]) -> ClusterSettings:
    known = [f.name for f in fields(ClusterSettings)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            path, f"cluster.{unknown[0]}", f"unknown key; expected one of {', '.join(known)}"
        )
    for key, value in table.items():
        if not isinstance(value, str):
            raise ConfigError(path, f"cluster.{key}", f"expected a string, got {value!r}")
    return ClusterSettings(**table)


def render(config: Config) -> dict[str, Any]:
    """The TOML document for a Config (inverse of :func:`parse`): each optional
    table the config was given, or whose values differ from the defaults, with
    the keys that differ (``[peers]`` with both, ``[boot]`` with every key)."""
    doc: dict[str, Any] = {
        "state": {
            "dir": str(config.state_dir),
            "database": config.database_url,
            "secret_file": str(config.secret_file),
        },
        "services": {
            name: {"address": addr.address, "port": addr.port}
            for name, addr in config.services.items()
        },
    }
    peers = config.peers
    optional: dict[str, dict[str, Any]] = {
        "peers": {"port": peers.port, "fanout": peers.fanout} if peers != PeerSettings() else {},
        **jobsettings.render(config.jobs),
        "slurm": slurm_settings.render(config.slurm),
        "envroot": envconfig.render(config.envroot),
        "cluster": {k: v for k, v in asdict(config.cluster).items() if v is not None},
    }
    if config.boot is not None:
        optional["boot"] = boot_settings.render(config.boot)
    if config.nfs is not None:
        optional["nfs"] = nfsconfig.render(config.nfs, config.boot)
    for name in TABLES:
        table = optional.get(name)
        if table is not None and (table or name in config.given):
            doc[name] = table
    return doc


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _table(path: Path, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(_leaf(key))
    if not isinstance(value, dict):
        raise ConfigError(path, key, "expected a table ([" + key + "])")
    return value


def _optional(path: Path, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """An optional top-level table: empty when absent."""
    return _table(path, data, key) if key in data else {}


def _string(path: Path, table: Mapping[str, Any], key: str) -> str:
    value = table.get(_leaf(key))
    if not isinstance(value, str) or not value:
        raise ConfigError(path, key, f"expected a non-empty string, got {value!r}")
    return value


def _abs_path(path: Path, table: Mapping[str, Any], key: str) -> Path:
    value = Path(_string(path, table, key))
    if not value.is_absolute():
        raise ConfigError(path, key, f"expected an absolute path, got '{value}'")
    return value


def _address(path: Path, table: Mapping[str, Any], key: str) -> str:
    value = _string(path, table, key)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(path, key, f"expected an IPv4 or IPv6 address, got {value!r}") from None
    return value


def _port(path: Path, table: Mapping[str, Any], key: str) -> int:
    value = table.get(_leaf(key))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(path, key, f"expected an integer port 1-65535, got {value!r}")
    return value
