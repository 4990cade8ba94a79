"""Site filesystems a network-booted node mounts: ``[[boot.mounts]]`` of the config.

A diskless node has only its stage-3 root; users' homes and data live on
filers. Each entry names one filesystem stage 3 mounts before its agent
registers (:mod:`launcher.node.sitemounts`)::

    [[boot.mounts]]
    source = "{master}:/home"      # {master}: the master's [boot] master_address
    target = "/home"
    type = "nfs4"
    options = "vers=4.1,hard,timeo=100"

The master hands the list to each node in its enroll answer with ``{master}``
filled in, so a node needs nothing but its boot ticket. Without a
``[[boot.mounts]]`` list, each path the master exports (``[nfs] exports``)
is mounted at the same path (``{master}:/home`` at ``/home``).

A target is where the node's agent and jobs see the filesystem: an absolute,
normalised path that is not ``/`` and not under a directory the node itself
needs (:data:`RESERVED`). The type is any the node's kernel knows (the image
carries the NFS client; a site with another filesystem installs its client);
options are the kernel's comma-separated mount data, one printable word.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bootsvc.errors import BootSettingsError

#: Where no site filesystem may be mounted: the node's own directories.
RESERVED = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var", "/usr", "/etc", "/root")
#: Mount types stage 3 mounts itself with mount(2): NFS, whose client it carries.
NFS_TYPES = ("nfs4", "nfs")
#: Options used when an entry names none: NFSv4.1 over TCP, hard (a job waits out
#: a filer's restart rather than getting EIO; SIGKILL still ends it).
DEFAULT_OPTIONS = "vers=4.1,proto=tcp,hard,timeo=100,retrans=3"
MASTER = "{master}"
KEYS = ("source", "target", "type", "options")
_TYPE = re.compile(r"^[a-z0-9_.]{1,32}$")
_OPTIONS = re.compile(r"^[A-Za-z0-9_.,=:/@+-]{0,512}$")
# host:/path, host an IPv4 address, a DNS name or {master}; the path printable, no comma.
_SOURCE = re.compile(r"^(\{master\}|[A-Za-z0-9.-]{1,253}):(/[\x21-\x2b\x2d-\x7e]*)$")


@dataclass(frozen=True)
class SiteMount:
    """One filesystem a node mounts: ``source`` (``host:/path``), at ``target``."""

    source: str
    target: str
    type: str = "nfs4"
    options: str = DEFAULT_OPTIONS

    @property
    def host(self) -> str:
        return self.source.rsplit(":", 1)[0]

    @property
    def path(self) -> str:
        return self.source.rsplit(":", 1)[1]

    def for_master(self, master: str) -> SiteMount:
        """This entry with ``{master}`` in its source replaced by ``master``."""
        return SiteMount(self.source.replace(MASTER, master), self.target, self.type, self.options)

    def to_wire(self) -> dict[str, str]:
        return {
            "source": self.source,
            "target": self.target,
            "type": self.type,
            "options": self.options,
        }


def parse_one(table: Any, where: str) -> SiteMount:
    """One entry (a decoded table); raises BootSettingsError naming ``where`` and the key."""
    if not isinstance(table, Mapping):
        raise BootSettingsError(where, f"expected a table with {', '.join(KEYS)}, got {table!r}")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise BootSettingsError(f"{where}.{unknown[0]}", f"unknown key; expected {', '.join(KEYS)}")
    source = table.get("source")
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise BootSettingsError(
            f"{where}.source",
            f"expected host:/path (host an address, a name or {MASTER}), got {source!r}",
        )
    target = table.get("target")
    if (
        not isinstance(target, str)
        or not target.startswith("/")
        or posixpath.normpath(target) != target
    ):
        raise BootSettingsError(
            f"{where}.target", f"expected a normalised absolute path, got {target!r}"
        )
    if (
        target == "/"
        or not target.isprintable()
        or any(target == r or target.startswith(r + "/") for r in RESERVED)
    ):
        raise BootSettingsError(
            f"{where}.target",
            f"{target!r} is the node's own: mount site filesystems elsewhere than / and "
            f"{', '.join(RESERVED)}",
        )
    kind = table.get("type", "nfs4")
    if not isinstance(kind, str) or not _TYPE.match(kind):
        raise BootSettingsError(
            f"{where}.type", f"expected a filesystem type such as nfs4, got {kind!r}"
        )
    options = table.get("options", DEFAULT_OPTIONS)
    if not isinstance(options, str) or not _OPTIONS.match(options):
        raise BootSettingsError(
            f"{where}.options",
            f"expected comma-separated mount options (letters, digits, _.,=:/@+-), got {options!r}",
        )
    return SiteMount(source, target, kind, options)


def parse_list(entries: Any, where: str = "boot.mounts") -> tuple[SiteMount, ...]:
    """A whole ``[[boot.mounts]]`` list: each entry checked, no target twice."""
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise BootSettingsError(where, f"expected a list of tables ([[{where}]]), got {entries!r}")
    mounts = tuple(parse_one(e, f"{where}[{i}]") for i, e in enumerate(entries))
    seen: set[str] = set()
    for i, mount in enumerate(mounts):
        if mount.target in seen:
            raise BootSettingsError(f"{where}[{i}].target", f"{mount.target} is mounted twice")
        seen.add(mount.target)
    return mounts


#: The NFS port a mount uses unless its options say ``port=``.
NFS_PORT = 2049


def from_exports(
    exports: Sequence[str], host: str = MASTER, port: int = NFS_PORT
) -> tuple[SiteMount, ...]:
    """The default list: each path the master exports (``[nfs]``, served on ``host``
    at ``port``), mounted at the same path."""
    options = DEFAULT_OPTIONS + (f",port={port}" if port != NFS_PORT else "")
    return tuple(SiteMount(f"{host}:{path}", path, "nfs4", options) for path in exports)


def render(mounts: Sequence[SiteMount]) -> list[dict[str, str]]:
    return [m.to_wire() for m in mounts]
