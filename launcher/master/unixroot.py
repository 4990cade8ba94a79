"""A minimal Unix root from the master: the /etc a job's manifest gets at submission.

The seed's environment root is "by default a ramdisk configured as a minimal
Unix root by the master". When the master takes a submission (``POST /jobs``,
``POST /manifests``), after the user's own files were checked, it adds:

- generated: /etc/passwd (root and the job's user), /etc/group (root's group,
  the user's groups, the user the only member), /etc/hosts (localhost, the
  master, every node the state database knows with its address);
- copied: ``[envroot] master_files`` (:mod:`launcher.master.sitefiles`).

These entries are root's (uid None), their bodies in the store, and they are
recorded, cached, pinned and accounted like any other entry. The master's
versions win: a user entry at one of these paths, under one, or a non-directory
standing where one of them needs a directory, is dropped; so is one at a path
a node fills itself (``node_files``). The manifest id changes (it is the hash
of the document) and the augmented manifest is the one stored and admitted.
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import os
import pwd
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, select

from bootsvc.settings import BootSettings
from cachefs.errors import CachefsError
from cachefs.manifest import Entry, Manifest
from cachefs.store import Store
from launcher.config import Config
from launcher.envconfig import EnvRootSettings
from launcher.errors import ConfigError, SubmissionError
from launcher.master import etcfiles
from launcher.master.sitefiles import SiteFiles
from launcher.state.db import transaction
from launcher.state.models import Node

log = logging.getLogger(__name__)

PASSWD, GROUP, HOSTS = "/etc/passwd", "/etc/group", "/etc/hosts"
GENERATED = (PASSWD, GROUP, HOSTS)
#: Mode of the generated files, as Debian's.
GENERATED_MODE = 0o644


def master_host(config: Config, boot: BootSettings | None) -> tuple[str, str] | None:
    """(address, name) of the master for the jobs' /etc/hosts: its host name and
    the address nodes reach it at: ``[boot] master_address``, else the control
    service's address when it is not a wildcard, else the first address of the
    virtual cluster's ``[cluster] subnet``; None when the config gives none."""
    name = socket.gethostname()
    if boot is not None:
        return str(boot.master_address), name
    control = config.service("control").address
    if not ipaddress.ip_address(control).is_unspecified:
        return control, name
    subnet = config.cluster.subnet
    if subnet is None:
        return None
    try:
        return str(ipaddress.ip_network(subnet, strict=False).network_address + 1), name
    except ValueError as exc:
        raise ConfigError(
            config.path, "cluster.subnet", f"expected a network like 10.77.0.0/24, got {subnet!r}"
        ) from exc


def _ancestors(path: str) -> Iterable[str]:
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        yield path


def merge(user: Manifest, ours: Iterable[Entry], reserved: Iterable[str]) -> Manifest:
    """``user``'s manifest with ``ours`` added: a user entry at or under one of
    ours or of ``reserved`` is dropped, and so is a user file or symlink where
    one of them needs a directory. Raises ManifestError if ``ours`` is not a
    valid set of entries."""
    mine = {e.path: e for e in ours}
    covered = set(mine) | set(reserved)
    under = tuple(f"{p}/" for p in covered)  # str.startswith of a tuple: one C loop
    needs_dir = {a for p in covered for a in _ancestors(p)}
    kept = [
        e
        for e in user
        if e.path not in covered
        and not e.path.startswith(under)
        and not (e.kind != "dir" and e.path in needs_dir)
    ]
    return Manifest(user.root, (*kept, *mine.values()), user.owner)


@dataclass(frozen=True)
class Augmented:
    """A submission's manifest with the master's /etc, and the objects of the
    master's entries (sha256 -> size): nobody's, for the store quotas."""

    manifest: Manifest
    objects: dict[str, int]


class UnixRoot:
    """Adds the master's /etc to submitted manifests (one per master process)."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        settings: EnvRootSettings,
        master: tuple[str, str] | None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.master = master
        self.site = SiteFiles(store, settings.master_files)
        #: paths whose user entries are dropped (with everything under them)
        self.reserved = (*GENERATED, *settings.master_files, *settings.node_files)

    def augment(self, manifest: Manifest) -> Augmented:
        """``manifest`` (a submission, checked: its owner has an account) with the
        master's /etc. Blocks (the store, the database, the site files): call it
        in a worker thread. Raises SubmissionError when the result is not a valid
        manifest (a site file changed while it was read: submit again),
        DatabaseUnavailable."""
        if manifest.owner is None:
            raise SubmissionError("manifest", "the manifest has no owner; make it as yourself")
        started = time.perf_counter()
        generated = self.generated(manifest.owner)
        ours: list[Entry] = []
        for path, body in sorted(generated.items()):
            sha, size = self.store.ingest_bytes(body)
            ours.append(Entry(path, "file", GENERATED_MODE, size, sha))
        ours += [e for e in self.site.entries() if e.path not in generated]
        try:
            augmented = merge(manifest, ours, self.reserved)
        except CachefsError as exc:
            raise SubmissionError(
                None,
                f"the master's /etc for the job is inconsistent ({exc}); submit again",
                status=503,
            ) from exc
        log.debug(
            "%d master entries added to a manifest of %d in %.1f ms",
            len(ours),
            len(manifest),
            (time.perf_counter() - started) * 1000,
        )
        objects = {e.sha256: e.size for e in ours if e.sha256 is not None and e.size is not None}
        return Augmented(augmented, objects)

    def generated(self, uid: int) -> dict[str, bytes]:
        """The bodies of /etc/passwd, /etc/group and /etc/hosts for a job of ``uid``."""
        root = pwd.getpwuid(0)
        accounts = [_account(root)]
        groups = {root.pw_gid}
        user: pwd.struct_passwd | None = None
        if uid != 0:
            user = pwd.getpwuid(uid)
            accounts.append(_account(user))
            groups.update(os.getgrouplist(user.pw_name, user.pw_gid))
        return {
            PASSWD: etcfiles.passwd(accounts),
            GROUP: etcfiles.group(
                _groups(groups),
                user.pw_name if user is not None else None,
                user.pw_gid if user is not None else None,
            ),
            HOSTS: etcfiles.hosts(self.master, self._nodes()),
        }

    def _nodes(self) -> list[tuple[str, str | None]]:
        with transaction(self.engine, readonly=True) as session:
            rows = session.execute(select(Node.name, Node.address).where(Node.name.is_not(None)))
            return [(str(name), address) for name, address in rows]


def _account(entry: pwd.struct_passwd) -> etcfiles.Account:
    return etcfiles.Account(
        entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_gecos, entry.pw_dir, entry.pw_shell
    )


def _groups(gids: Iterable[int]) -> list[etcfiles.Group]:
    """The groups of ``gids`` that have a name on the master (others show as numbers)."""
    found = []
    for gid in sorted(set(gids)):
        try:
            found.append(etcfiles.Group(grp.getgrgid(gid).gr_name, gid))
        except KeyError:
            continue
    return found
