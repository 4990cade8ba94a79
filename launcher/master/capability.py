"""Per-job object capabilities: what a node presents to fetch one job's files.

The cluster secret never leaves the master. Each ``prepare`` carries instead a
capability for that job's manifest, for a limited time::

    bjc1.<job>.<manifest sha256>.<expires, unix s>.<hex HMAC-SHA256>

the HMAC taken with the cluster secret over ``bjc1|job|manifest|expires``.
The master's object service (:class:`CapabilityAuthorizer`) checks the MAC in
constant time and the expiry, and then serves only objects of that manifest,
whatever the store holds. A node's peer service cannot check the MAC (it has
no secret); it accepts exactly the capabilities the master sent it in its own
``prepare`` messages, for that job's objects (:mod:`launcher.node.peers`).

One capability per job, the same on each of its nodes, not one per node: a
peer compares what a child presents with what it was given itself, and a node
of the job already holds every object the capability grants, so a per-node
capability would add nothing a peer could check.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from cachefs.errors import CachefsError
from cachefs.manifest import is_sha256, loads
from cachefs.service import Grant
from cachefs.store import StoreReader

log = logging.getLogger(__name__)

PREFIX = "bjc1"
#: Seconds a capability is good for: a fill (Slurm's prolog included) is over
#: well within it; a node that fills later gets a new ``prepare``.
TTL_S = 3600
#: Manifests whose object sets the authorizer keeps in memory.
KEPT_MANIFESTS = 256


@dataclass(frozen=True)
class Capability:
    job: int
    manifest: str
    expires: int


def _mac(secret: str, job: int, manifest: str, expires: int) -> str:
    message = f"{PREFIX}|{job}|{manifest}|{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def issue(
    secret: str, job: int, manifest: str, *, ttl_s: int = TTL_S, now: float | None = None
) -> str:
    """A capability for ``job``'s ``manifest`` (its id), good for ``ttl_s`` seconds."""
    expires = int(now if now is not None else time.time()) + ttl_s
    return f"{PREFIX}.{job}.{manifest}.{expires}.{_mac(secret, job, manifest, expires)}"


def parse(token: str) -> tuple[Capability, str] | None:
    """The capability a token names and its MAC, or None when it is not one."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != PREFIX:
        return None
    _, job, manifest, expires, mac = parts
    if not (job.isdigit() and expires.isdigit() and is_sha256(manifest)):
        return None
    if len(job) > 20 or len(expires) > 20 or len(mac) != 64:
        return None
    return Capability(int(job), manifest, int(expires)), mac


def verify(secret: str, token: str, *, now: float | None = None) -> Capability | None:
    """The capability ``token`` is, when its MAC is the master's and it has not expired."""
    parsed = parse(token)
    if parsed is None:
        return None
    cap, mac = parsed
    if not hmac.compare_digest(mac, _mac(secret, cap.job, cap.manifest, cap.expires)):
        return None
    if cap.expires < (now if now is not None else time.time()):
        return None
    return cap


class CapabilityAuthorizer:
    """The master's object service's authorizer: a valid capability grants the
    objects of its manifest, read from the store (once; kept for the next ones)."""

    def __init__(
        self, secret: str, store: StoreReader, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.secret = secret
        self.store = store
        self.clock = clock
        self._objects: OrderedDict[str, frozenset[str]] = OrderedDict()
        #: objects a job fetches late (launcher.master.late), beyond its manifest's
        self._late: OrderedDict[int, set[str]] = OrderedDict()
        self._lock = threading.Lock()
        #: body bytes the object service sent (its ``on_sent``): in all, and per
        #: job for the last KEPT_MANIFESTS jobs. The master's egress; nodes
        #: report their side as ``bytes_from_master``.
        self.bytes_sent = 0
        self._sent: OrderedDict[int, int] = OrderedDict()

    def issue(self, job: int, manifest: str, objects: Collection[str] | None = None) -> str:
        """A capability for ``job``; ``objects`` (the manifest's) spares a store read later."""
        if objects is not None:
            self._keep(manifest, frozenset(objects))
        return issue(self.secret, job, manifest, now=self.clock())

    def __call__(self, token: str) -> Grant | None:
        cap = verify(self.secret, token, now=self.clock())
        if cap is None:
            return None
        objects = self._manifest_objects(cap.manifest)
        if objects is None:
            return None
        with self._lock:
            late = self._late.get(cap.job)
        if late is None:
            return objects.__contains__
        return lambda sha: sha in objects or sha in late

    def sent(self, token: str, count: int) -> None:
        """The object service sent ``count`` body bytes to a holder of ``token``
        (a capability it granted: the job is read from it, the MAC not checked again)."""
        parsed = parse(token)
        with self._lock:
            self.bytes_sent += count
            if parsed is None:
                return
            job = parsed[0].job
            self._sent[job] = self._sent.get(job, 0) + count
            self._sent.move_to_end(job)
            while len(self._sent) > KEPT_MANIFESTS:
                self._sent.popitem(last=False)

    def sent_for(self, job: int) -> int | None:
        """Body bytes sent for ``job`` (None: none since the master started, or forgotten)."""
        with self._lock:
            return self._sent.get(job)

    def allow(self, job: int, sha256: str) -> None:
        """Grant ``job``'s capability one more object: a file it fetches late, which
        the master stored after opening it as the job's user."""
        with self._lock:
            self._late.setdefault(job, set()).add(sha256)
            self._late.move_to_end(job)
            while len(self._late) > KEPT_MANIFESTS:
                self._late.popitem(last=False)

    def _keep(self, manifest: str, objects: frozenset[str]) -> None:
        with self._lock:
            self._objects[manifest] = objects
            self._objects.move_to_end(manifest)
            while len(self._objects) > KEPT_MANIFESTS:
                self._objects.popitem(last=False)

    def _manifest_objects(self, manifest: str) -> frozenset[str] | None:
        with self._lock:
            found = self._objects.get(manifest)
            if found is not None:
                self._objects.move_to_end(manifest)
                return found
        try:
            with self.store.open(manifest) as f:
                objects = frozenset(loads(f.read(), expect_id=manifest).objects())
        except (CachefsError, OSError) as exc:
            log.warning("capability for manifest %s: cannot read it: %s", manifest, exc)
            return None
        self._keep(manifest, objects)
        return objects
