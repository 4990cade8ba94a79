"""How a simulated node fills a job: its sources in the master's order, as a real agent.

A real agent's cache (:mod:`cachefs.cache.fetch`) asks its sources in order:
all objects still wanted go to the first source of their order in one request;
what a source does not have goes to the next; a source that breaks off moves
behind the others for what it had not delivered, and after ``attempts`` such
failures in one fill it is dropped. :class:`SimFill` walks the sources the same
way, without a disk:

- the master's object service is asked for real (:class:`cachefs.client.HttpSource`
  with the job's capability): its bytes are streamed, hashed and thrown away, so
  the master really sends them and its egress is a real figure;
- a peer is another simulated node of this process, found by the fake port the
  master handed out (:class:`SimPeers`; nothing listens there). It answers as
  :mod:`launcher.node.peers` does: a request for a job whose fill has not started
  there waits up to ``join_wait_s`` (the real ``Flights.join_wait_s``) and is then
  refused (the real 401); an object it holds is served; one a running fill there
  still expects is waited for; any other is "not here". A peer that was killed
  is unreachable, and one killed while serving breaks off. Peer bytes are
  counted, not sent.

Not simulated: cut-through. A child gets an object from its parent once the
parent holds the whole object (the real parent streams it as it grows), so
with a per-object delay each level of the tree adds one object's delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from cachefs.cache.fetch import Wanted
from cachefs.cache.flights import JOIN_WAIT_S
from cachefs.client import SMALL_LIMIT, HttpSource
from cachefs.errors import SourceAuthError, SourceError, SourceUnreachableError
from cachefs.source import Incoming, ObjectSource
from launcher import wire

#: A real agent's attempts per object and per source in one fill (NodeCache.fill's).
ATTEMPTS = 3


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


@dataclass
class SimPeer:
    """What one simulated node shows its peers: the objects it holds and its running fills."""

    name: str
    port: int | None
    #: sha256 -> size of every object held (the node's SimCache.objects)
    objects: dict[str, int]
    #: job -> the objects its running fill still expects
    filling: dict[int, set[str]] = field(default_factory=dict)
    #: jobs whose fill has started here (the real Flights' joined jobs)
    started: set[int] = field(default_factory=set)
    dead: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float | None = None) -> None:
        """Return at the next change here (or after ``timeout`` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def kill(self) -> None:
        """From now on unreachable; requests being served break off."""
        self.dead = True
        self.notify()


class SimPeers:
    """The simulated nodes of this process by peer port: where a peer URL leads."""

    def __init__(self, *, join_wait_s: float = JOIN_WAIT_S) -> None:
        self.join_wait_s = join_wait_s
        self.by_port: dict[int, SimPeer] = {}
        #: node name -> the peer ports its current fill lists, first first
        self.sources: dict[str, list[int]] = {}

    def add(self, peer: SimPeer) -> None:
        if peer.port is not None:
            self.by_port[peer.port] = peer

    def children(self, peer: SimPeer) -> list[str]:
        """Nodes whose fill lists ``peer`` as their first source (its children now)."""
        return [n for n, ports in self.sources.items() if ports and ports[0] == peer.port]


class PeerSource:
    """An ObjectSource for a simulated peer: yields objects with no bytes (counted by size)."""

    kind = "peer"

    def __init__(
        self, url: str, job: int, peers: SimPeers, sizes: Mapping[str, int] | None = None
    ) -> None:
        """``sizes``: the job's objects (sha256 -> size), to ask in HttpSource's order."""
        self.sizes = sizes or {}
        self.label = url
        self.job = job
        self.peers = peers
        self.port = urlsplit(url).port
        self.peer = peers.by_port.get(self.port) if self.port is not None else None

    def _broken(self, when: str) -> SourceUnreachableError:
        return SourceUnreachableError(self.label, f"connection failed {when} (simulated peer)")

    async def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        peer = self.peer
        if peer is None or peer.dead:
            raise self._broken("connecting")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.peers.join_wait_s
        while self.job not in peer.started:  # the real peer service's bounded join
            left = deadline - loop.time()
            if left <= 0:
                raise SourceAuthError(self.label, "the token was refused (HTTP 401)")
            await peer.changed(left)
            if peer.dead:
                raise self._broken("waiting for the job")
        # As a real node's HttpSource asks: small objects (in one batch) first, then
        # large ones (by GET); a child asking in another order than its parent
        # receives would wait for each object in turn.
        for sha in sorted(wanted, key=lambda d: self.sizes.get(d, 0) > SMALL_LIMIT):
            while True:
                if peer.dead:
                    raise self._broken(f"while waiting for object {sha}")
                if sha in peer.objects:
                    yield Incoming(sha, peer.objects[sha], _nothing())
                    break
                if not any(sha in expected for expected in peer.filling.values()):
                    break  # not here: the next source
                await peer.changed()


def sources_of(
    prepare: wire.Prepare,
    peers: SimPeers,
    session: aiohttp.ClientSession | None,
    sizes: Mapping[str, int] | None = None,
) -> list[ObjectSource]:
    """The sources a ``prepare`` names, in order: peers simulated, the master real.

    Raises WireError for a source that is not a dict with an http(s) url and a
    known kind, as the real agent does."""
    sources: list[ObjectSource] = []
    for url, kind in prepare.source_list():
        if kind == "peer":
            sources.append(PeerSource(url, prepare.job, peers, sizes))
        else:
            sources.append(HttpSource(url, prepare.token, session=session))
    return sources


class FillFailed(Exception):
    """No source could give an object (the real agent's refusal)."""


@dataclass
class SimFill:
    """One fill of one simulated node, walking ``sources`` as cachefs.cache.fetch does.

    ``on_installed(sha)`` runs after each object arrives (after ``delay_s``, the
    simulated time to receive and write one object)."""

    peer: SimPeer
    job: int
    delay_s: float = 0.0
    attempts: int = ATTEMPTS
    on_installed: Callable[[str], None] | None = None
    bytes_from: dict[str, int] = field(default_factory=lambda: {"master": 0, "peer": 0})
    _failures: dict[int, int] = field(default_factory=dict)

    async def run(self, wanted: Mapping[str, int], sources: Sequence[ObjectSource]) -> None:
        """Get every wanted object not yet held. Raises FillFailed naming the first
        object no source had, or SourceError when the last source of one broke off."""
        missing = {sha: size for sha, size in wanted.items() if sha not in self.peer.objects}
        pending = {sha: Wanted(sha, size, list(sources)) for sha, size in missing.items()}
        self.peer.filling[self.job] = set(missing)
        self.peer.started.add(self.job)
        self.peer.notify()
        try:
            while pending:
                for source in sources:
                    group = [w.sha for w in pending.values() if w.order and w.order[0] is source]
                    if group:
                        await self._fetch(source, group, pending)
                gone = [w.sha for w in pending.values() if not w.order]
                if gone:
                    raise FillFailed(f"no source has object {gone[0]}")
        finally:
            self.peer.filling.pop(self.job, None)
            self.peer.notify()

    async def _fetch(
        self, source: ObjectSource, group: list[str], pending: dict[str, Wanted]
    ) -> None:
        delivered: set[str] = set()
        try:
            async for incoming in source.fetch(group):
                w = pending.get(incoming.sha256)
                if w is None or incoming.sha256 in delivered:
                    async for _ in incoming.chunks:
                        pass
                    continue
                delivered.add(w.sha)
                if not await self._receive(source, w, incoming):
                    w.attempts += 1
                    if w.attempts >= self.attempts:
                        raise FillFailed(f"{w.attempts} bad copies of object {w.sha}")
                    w.order.remove(source)
                    w.order.append(source)
                    continue
                del pending[w.sha]
        except SourceError:
            failures = self._failures[id(source)] = self._failures.get(id(source), 0) + 1
            for w in pending.values():
                if source not in w.order:
                    continue
                if failures >= self.attempts:
                    w.order.remove(source)  # dropped for the rest of this fill
                elif w.sha in group and w.sha not in delivered:
                    w.order.remove(source)  # behind the others for what it owed
                    w.order.append(source)
                if not w.order:
                    raise
            return
        for sha in set(group) - delivered:  # not there: the next source
            w = pending[sha]
            if source in w.order:
                w.order.remove(source)

    async def _receive(self, source: ObjectSource, w: Wanted, incoming: Incoming) -> bool:
        """Take one object; False when its copy is bad (wrong size or digest)."""
        if source.kind == "peer":
            received, good = w.size, True  # a simulated peer holds a verified copy
        else:
            digest = hashlib.sha256()
            received = 0
            async for chunk in incoming.chunks:
                received += len(chunk)
                digest.update(chunk)
            good = received == w.size and digest.hexdigest() == w.sha
        self.bytes_from[source.kind] = self.bytes_from.get(source.kind, 0) + received
        if not good:
            return False
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.peer.objects[w.sha] = w.size
        self.peer.filling.get(self.job, set()).discard(w.sha)
        self.peer.notify()
        if self.on_installed is not None:
            self.on_installed(w.sha)
        return True


def report(fill: SimFill, wanted: Mapping[str, int], hits: int, started: float) -> wire.FillReport:
    """The ``prepared.fill`` a real agent would send for ``fill``."""
    return wire.FillReport(
        objects_total=len(wanted),
        objects_hit=hits,
        bytes_total=sum(wanted.values()),
        bytes_from_master=fill.bytes_from.get("master", 0),
        bytes_from_peers=fill.bytes_from.get("peer", 0),
        fill_seconds=round(time.monotonic() - started, 6),
    )
