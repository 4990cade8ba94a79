"""The text each NFS server reads for ``[nfs]``: ganesha's config, the kernel's exports.

Pure functions of the settings (:mod:`launcher.master.nfsserver` writes them).
What both promise (docs/nfs.md): each export at its own path, only to the
``clients`` network, root squashed to nobody, AUTH_SYS, read-write.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from launcher.nfsconfig import NfsSettings

#: Between ganesha's server part (a change needs a restart: its address and port
#: are not reloaded) and its exports (reloaded on SIGHUP, measured with 4.3).
EXPORTS_MARKER = "# --- exports (reloaded on SIGHUP) ---"
#: Export_Id is ganesha's handle for an export across reloads (1-65535; 0 is
#: the pseudo root).
MAX_EXPORT_ID = 65535
#: Who a squashed root becomes: Debian's nobody/nogroup, as the kernel's nfsd
#: (anonuid) has it; ganesha's own default is -2 (4294967294 on disk, measured).
NOBODY = 65534


def export_ids(exports: tuple[str, ...], previous: Mapping[str, int]) -> dict[str, int]:
    """An Export_Id per export: the one it had (``previous``) or the lowest free.

    A path keeps its id across applies, so a reload updates it in place rather
    than removing and re-adding it under a number another path had."""
    ids = {path: previous[path] for path in exports if path in previous}
    taken = set(ids.values())
    free = (n for n in range(1, MAX_EXPORT_ID + 1) if n not in taken)
    for path in exports:
        if path not in ids:
            ids[path] = next(free)
    return ids


def ganesha_config(settings: NfsSettings, ids: Mapping[str, int], nfs_dir: Path) -> str:
    """nfs-ganesha 4.3's config: NFSv4 over TCP on ``address``:``port`` only, no
    NLM/RQUOTA/UDP (NFSv3's helpers; rpcbind is not needed), no grace period
    (nothing to reclaim: nodes hold no locks across a restart that matter more than
    a restart's 90 s wait), numeric owners (nodes map uids without idmapd), the
    recovery dir under ``nfs_dir``; one EXPORT per path (``ids``)."""
    core = f"""# Written by beoctl nfs apply from [nfs] of the master's config; edits are lost.
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {settings.port};
    Bind_addr = {settings.address};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFSV4 {{
    Graceless = true;
    Allow_Numeric_Owners = true;
    Only_Numeric_Owners = true;
    RecoveryRoot = "{nfs_dir / "recovery"}";
}}
"""
    exports = [EXPORTS_MARKER]
    for path in settings.exports:
        exports.append(
            f"""EXPORT {{
    Export_Id = {ids[path]};
    Path = "{path}";
    Pseudo = "{path}";
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    Squash = {settings.squash};
    Anonymous_Uid = {NOBODY};
    Anonymous_Gid = {NOBODY};
    Access_Type = None;
    CLIENT {{
        Clients = {settings.clients};
        Access_Type = RW;
    }}
    FSAL {{
        Name = VFS;
    }}
}}"""
        )
    return core + "\n".join(exports) + "\n"


def split_ganesha_config(text: str) -> tuple[str, str]:
    """The server part and the exports part of a config :func:`ganesha_config` wrote."""
    core, marker, exports = text.partition(EXPORTS_MARKER)
    return core, marker + exports


def kernel_exports(settings: NfsSettings) -> str:
    """``/etc/exports.d/beolaunch.exports`` for the kernel's nfsd.

    The exports file cannot say which address, port or NFS versions the server
    uses: those are nfsd's own (``/etc/nfs.conf`` [nfsd] ``host``, ``port``,
    ``vers3=n``; docs/nfs.md). ``no_subtree_check``: the kernel's default, said."""
    options = f"rw,sync,{settings.squash},sec=sys,no_subtree_check"
    lines = ["# Written by beoctl nfs apply from [nfs] of the master's config; edits are lost."]
    lines += [f"{path} {settings.clients}({options})" for path in settings.exports]
    return "\n".join(lines) + "\n"
