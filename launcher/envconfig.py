"""``[envroot]``: what a job's root holds besides its closure, and what it may fetch late.

The seed: the environment root is "by default a ramdisk configured as a
minimal Unix root by the master", and nodes "have a master with its full
reference install to fall on when they need to extend their limited
environment". :func:`launcher.config.load` parses this table once (:func:`parse`)
and the master sends the nodes what they need in each ``prepare``
(:meth:`EnvRootSettings.for_nodes`): nodes booted from the network have no
configuration file of their own.

Keys (all optional; the defaults and why are in docs/execution.md,
"The environment root"):

- ``master_files``: paths on the master copied into every root (directories
  recursively, every symlink on the way kept), read by the master and shipped
  only when world-readable: the site's public configuration.
- ``extra_master_files``: added to ``master_files`` (to extend the defaults
  without repeating them).
- ``node_files``: paths each node serves from its own filesystem
  (``/etc/hostname``, ``/etc/resolv.conf``).
- ``binds``: node directories bound into every job root (``/home``,
  ``/scratch``: where users keep their data), at the same path; none at or
  under ``/proc``, ``/dev`` or ``/tmp``, which each task binds of its own.
- ``late``: ``"fetch"`` (a path the closure missed is fetched from the master
  when the job looks it up) or ``"fail"`` (nothing late: it does not exist).
- ``late_timeout_s``: how long a late lookup waits for an absent master.
- ``no_fallback``: paths never fetched late (the master's own /proc...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from launcher.errors import ConfigError

LatePolicy = Literal["fetch", "fail"]
LATE_POLICIES: tuple[LatePolicy, ...] = ("fetch", "fail")

#: The site's public configuration every program may read: name service
#: switch, time zone, CA certificates and OpenSSL's config, the loader's
#: cache (a program dlopening a library by soname finds it there, then the
#: fallback fetches it), protocol and service numbers, the OS release.
DEFAULT_MASTER_FILES: tuple[str, ...] = (
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ld.so.cache",
    "/etc/protocols",
    "/etc/services",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/mime.types",
    "/etc/shells",
)
#: Files each node has of its own.
DEFAULT_NODE_FILES: tuple[str, ...] = ("/etc/hostname", "/etc/resolv.conf")
#: Never fetched late: the master's kernel and runtime state, and temporary
#: directories (the job has its own /tmp).
DEFAULT_NO_FALLBACK: tuple[str, ...] = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp")
DEFAULT_LATE_TIMEOUT_S = 20.0
#: Bound by each task of its own: no site bind may lie there.
TASK_OWN_MOUNTS: tuple[str, ...] = ("/proc", "/dev", "/tmp")

_KEYS = (
    "master_files",
    "extra_master_files",
    "node_files",
    "binds",
    "late",
    "late_timeout_s",
    "no_fallback",
)


@dataclass(frozen=True)
class EnvRootSettings:
    master_files: tuple[str, ...] = DEFAULT_MASTER_FILES
    node_files: tuple[str, ...] = DEFAULT_NODE_FILES
    binds: tuple[str, ...] = ()
    late: LatePolicy = "fetch"
    late_timeout_s: float = DEFAULT_LATE_TIMEOUT_S
    no_fallback: tuple[str, ...] = DEFAULT_NO_FALLBACK

    def for_nodes(self, *, late: LatePolicy | None = None) -> dict[str, Any]:
        """The part nodes use, as sent in ``prepare`` (``late``: this job's policy)."""
        return {
            "node_files": list(self.node_files),
            "binds": list(self.binds),
            "late": late or self.late,
            "late_timeout_s": self.late_timeout_s,
            "no_fallback": list(self.no_fallback),
        }


@dataclass(frozen=True)
class NodeEnvSettings:
    """What a node got in ``prepare`` (:meth:`EnvRootSettings.for_nodes`)."""

    node_files: tuple[str, ...] = DEFAULT_NODE_FILES
    binds: tuple[str, ...] = ()
    late: LatePolicy = "fail"
    late_timeout_s: float = DEFAULT_LATE_TIMEOUT_S
    no_fallback: tuple[str, ...] = DEFAULT_NO_FALLBACK

    @classmethod
    def from_wire(cls, doc: Mapping[str, Any] | None) -> NodeEnvSettings:
        """Parse a ``prepare``'s ``envroot``; None (an older master): no late files.
        Raises ValueError naming the bad field."""
        if doc is None:
            return cls()
        where = Path("<prepare message>")
        try:
            parsed = parse(where, doc)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return cls(
            parsed.node_files, parsed.binds, parsed.late, parsed.late_timeout_s, parsed.no_fallback
        )

    def fallback_allowed(self, path: str) -> bool:
        """Whether ``path`` (absolute, normalised) may be fetched late."""
        if self.late != "fetch":
            return False
        # Under a site bind, the node's filesystem is the truth, present or not:
        # a bind missing on a node is not filled from the master's copy.
        closed = (*self.no_fallback, *self.binds)
        return not any(path == p or path.startswith(p.rstrip("/") + "/") for p in closed)


def parse(path: Path, table: Mapping[str, Any]) -> EnvRootSettings:
    """Validate a decoded ``[envroot]`` table; absent keys take their defaults.
    Raises ConfigError naming the key (``envroot.KEY``) and the expected form."""
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(
            path, f"envroot.{unknown[0]}", f"unknown key; expected one of {', '.join(_KEYS)}"
        )
    master = _paths(path, table, "master_files", DEFAULT_MASTER_FILES)
    master += tuple(p for p in _paths(path, table, "extra_master_files", ()) if p not in master)
    late = table.get("late", "fetch")
    if late not in LATE_POLICIES:
        raise ConfigError(path, "envroot.late", f"expected 'fetch' or 'fail', got {late!r}")
    timeout = table.get("late_timeout_s", DEFAULT_LATE_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(path, "envroot.late_timeout_s", f"expected seconds > 0, got {timeout!r}")
    binds = _paths(path, table, "binds", ())
    for bind in binds:
        taken = next((p for p in TASK_OWN_MOUNTS if _at_or_under(bind, p)), None)
        if taken is not None:
            raise ConfigError(
                path, "envroot.binds", f"{bind}: each task has its own {taken}; bind another path"
            )
    return EnvRootSettings(
        master,
        _paths(path, table, "node_files", DEFAULT_NODE_FILES),
        binds,
        late,
        float(timeout),
        _paths(path, table, "no_fallback", DEFAULT_NO_FALLBACK),
    )


def render(settings: EnvRootSettings) -> dict[str, Any]:
    """The ``[envroot]`` table of ``settings`` (inverse of :func:`parse`): the keys
    that differ from their defaults, ``master_files`` in full."""
    default = asdict(EnvRootSettings())
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in asdict(settings).items()
        if v != default[k]
    }


def _at_or_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _paths(
    path: Path, table: Mapping[str, Any], key: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    value = table.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, f"envroot.{key}", f"expected a list of paths, got {value!r}")
    out: list[str] = []
    for item in value:
        clean = "/" + "/".join(p for p in item.split("/") if p)
        if (
            not item.startswith("/")
            or any(p in (".", "..") for p in item.split("/"))
            or "\0" in item
        ):
            raise ConfigError(
                path, f"envroot.{key}", f"expected absolute paths without . or .., got {item!r}"
            )
        if clean != "/" and clean not in out:
            out.append(clean)
    return tuple(out)
