"""One simulated node agent: the real control protocol, no cache and no tasks.

It speaks to the master exactly as :mod:`launcher.node.agent` does (the same
URL, bearer token, ``hello``, heartbeats every ``heartbeat_s`` and answers,
all built from :mod:`launcher.wire`'s classes), so the master cannot tell it
from a real one. What it does not do: its cache only counts objects (a
``prepare`` fills from the sources the master gave, in order, as a real agent:
the master's bytes fetched for real and thrown away, peers simulated in this
process, :mod:`launcher.cluster.simfill`), and every task of an ``exec`` exits
0 at once with the ``exited`` a real agent sends.
:mod:`launcher.cluster.simnodes` runs many of them in one process.

A node can be killed (:meth:`SimAgent.kill`): its connection is dropped, it
never reconnects, and its peers find it unreachable from then on.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from cachefs.errors import CachefsError
from cachefs.manifest import Manifest
from launcher import wire
from launcher.cluster import simfill
from launcher.cluster.simfill import FillFailed, PeerSource, SimFill, SimPeer, SimPeers, sources_of

log = logging.getLogger(__name__)
#: Seconds between two progress messages of one fill (the status page's bars
#: move with them; with --object-delay-s a fill takes seconds).
PROGRESS_EVERY_S = 0.25

#: What a simulated node says it has (a plausible dual-socket compute node).
CPUS = 32
MEMORY_BYTES = 128 << 30
CACHE_BUDGET = 64 << 30
#: Close code of a master that does not know the token (launcher.node.agent's).
CLOSE_UNKNOWN_TOKEN = 4401


@dataclass
class SimCache:
    """A node cache that only counts: sha256 -> size, and each job's pinned digests."""

    budget: int = CACHE_BUDGET
    objects: dict[str, int] = field(default_factory=dict)
    pins: dict[int, set[str]] = field(default_factory=dict)

    def pin(self, job: int, wanted: dict[str, int]) -> None:
        self.pins[job] = set(wanted)

    def release(self, job: int) -> None:
        self.pins.pop(job, None)

    def document(self) -> dict[str, Any]:
        """The ``cache`` figures of hello and heartbeat (launcher.node.heartbeat's keys)."""
        pinned = set().union(*self.pins.values()) if self.pins else set()
        return {
            "bytes_used": sum(self.objects.values()),
            "budget": self.budget,
            "objects": len(self.objects),
            "pinned": len(pinned),
            "pinned_bytes": sum(self.objects.get(d, 0) for d in pinned),
        }


def hardware(name: str, index: int) -> dict[str, Any]:
    """A hardware report shaped as launcher.node.hardware's, for simulated node ``index``."""
    mac = "02:be:" + ":".join(f"{(index >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))
    return {
        "hostname": name,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus_logical": CPUS,
        "cpus_physical": CPUS // 2,
        "cpu_mhz_max": 3000,
        "memory_bytes": MEMORY_BYTES,
        "load": [0.0, 0.0, 0.0],
        "nics": [
            {
                "name": "eth0",
                "mac": mac,
                "ipv4": [],
                "up": True,
                "speed_mbps": 10000,
                "mtu": 1500,
                "driver": "simulated",
            }
        ],
    }


@dataclass
class Fill:
    """What a simulated node recorded of one fill: its report, or why it failed."""

    job: int
    sources: list[str]
    report: dict[str, Any] | None = None
    refused: str | None = None


@dataclass
class SimAgent:
    """One simulated node: ``run`` connects (again after a loss) until cancelled or killed.

    ``beats`` holds the wall-clock time (``time.time()``, seconds) each heartbeat
    was handed to the socket, for measuring when the master recorded it.
    ``peer_port``: the fake port of its peer service the master hands out
    (None: it serves no peers); ``peers`` resolves such ports to the simulated
    nodes of this process. ``object_delay_s``: simulated seconds per object filled.
    """

    url: str
    name: str
    token: str
    index: int
    heartbeat_s: float
    cache: SimCache = field(default_factory=SimCache)
    beats: list[float] = field(default_factory=list)
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    jobs: set[int] = field(default_factory=set)
    connects: int = 0
    peer_port: int | None = None
    peers: SimPeers = field(default_factory=SimPeers)
    object_delay_s: float = 0.0
    #: called after each object this node installs (simnodes' kill plan)
    on_installed: Callable[[SimAgent, str], None] | None = None
    fills: list[Fill] = field(default_factory=list)
    killed: bool = False

    def __post_init__(self) -> None:
        self.peer = SimPeer(self.name, self.peer_port, self.cache.objects)
        self.peers.add(self.peer)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        #: the fills under way (a prepare answers when its fill ends)
        self.running_fills: set[asyncio.Task[None]] = set()

    async def run(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore) -> None:
        """Serve the master until cancelled or killed, reconnecting after 0.5 s to
        10 s (doubling)."""
        self._session = session
        delay = 0.5
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self.killed:
            try:
                async with gate:  # a bounded number of handshakes at once
                    ws = await session.ws_connect(
                        self.url, headers=headers, heartbeat=15.0, max_msg_size=256 << 20
                    )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("%s: cannot reach the master (%s)", self.name, exc)
            else:
                async with ws:
                    await self._serve(ws)
                if self.killed:
                    return
                if ws.close_code == CLOSE_UNKNOWN_TOKEN:
                    log.error("%s: the master refused the token", self.name)
                else:
                    delay = 0.5
                log.warning("%s: lost the master (close code %s)", self.name, ws.close_code)
                self.registered.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def kill(self) -> None:
        """Die now: the control connection is dropped and never made again, fills
        stop, and peers find this node unreachable."""
        if self.killed:
            return
        self.killed = True
        self.peer.kill()
        for task in list(self.running_fills):
            task.cancel()
        if self._ws is not None:
            asyncio.get_running_loop().create_task(self._ws.close())

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        hello = wire.Hello(
            self.name,
            hardware(self.name, self.index),
            self.cache.document(),
            [],
            peer_port=self.peer_port,
            jobs=sorted(self.jobs),
        )
        try:
            await ws.send_str(wire.encode(hello))
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return
        self._ws = ws
        self.connects += 1
        self.registered.set()
        beat = asyncio.create_task(self._heartbeats(ws))
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = wire.decode(frame.data, wire.MASTER_TO_NODE)
                except wire.WireError as exc:
                    await ws.send_str(wire.encode(wire.Error(str(exc))))
                    continue
                if isinstance(message, wire.Prepare):
                    task = asyncio.create_task(self._prepare(message))
                    self.running_fills.add(task)
                    task.add_done_callback(self.running_fills.discard)
                    continue
                for answer in self.answer(message):
                    await ws.send_str(wire.encode(answer))
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.warning("%s: the control socket failed: %s", self.name, exc)
        finally:
            self._ws = None
            self.registered.clear()  # answers wait for the next connection
            beat.cancel()
            await asyncio.wait([beat])

    async def _prepare(self, message: wire.Prepare) -> None:
        """Fill, then answer on the connection open by then: a fill outlives a
        reconnect, as a real agent's answer waits in its outbox for the next one."""
        for answer in await self.prepare(message):
            while not self.killed:
                ws = self._ws
                if ws is None:
                    await self.registered.wait()
                    continue
                try:
                    await ws.send_str(wire.encode(answer))
                    break
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    await asyncio.sleep(0.1)  # the reader notices and reconnects

    async def prepare(self, message: wire.Prepare) -> list[wire.Message]:
        """Fill ``message``'s manifest from its sources in order; the answers to send."""
        started = time.monotonic()
        try:
            wanted = Manifest.from_document(message.manifest).objects()
        except CachefsError as exc:  # a real agent refuses a bad manifest too
            return [wire.Prepared(message.job, False, f"bad manifest: {exc}")]
        self.jobs.add(message.job)
        self.cache.pin(message.job, wanted)
        hits = sum(d in self.cache.objects for d in wanted)
        record = Fill(message.job, [str(s.get("kind")) for s in message.sources])
        self.fills.append(record)
        try:
            sources = sources_of(message, self.peers, self._session, wanted)
        except wire.WireError as exc:
            record.refused = str(exc)
            return [wire.Prepared(message.job, False, str(exc))]
        self.peers.sources[self.name] = [
            s.port for s in sources if isinstance(s, PeerSource) and s.port is not None
        ]

        done = {
            "files": hits,
            "bytes": sum(n for d, n in wanted.items() if d in self.cache.objects),
        }
        said = [time.monotonic()]

        def installed(sha: str) -> None:
            done["files"] += 1
            done["bytes"] += wanted.get(sha, 0)
            now = time.monotonic()
            if now - said[0] >= PROGRESS_EVERY_S:  # as a real agent: a bar, not a flood
                said[0] = now
                total = sum(wanted.values())
                self._say(
                    wire.Progress(message.job, done["files"], len(wanted), done["bytes"], total)
                )
            if self.on_installed is not None:
                self.on_installed(self, sha)

        fill = SimFill(self.peer, message.job, self.object_delay_s, on_installed=installed)
        try:
            await fill.run(wanted, sources)
        except (FillFailed, CachefsError) as exc:
            record.refused = str(exc)
            return [wire.Prepared(message.job, False, f"fill failed: {exc}")]
        finally:
            self.peers.sources.pop(self.name, None)
        report = simfill.report(fill, wanted, hits, started)
        record.report = report.to_wire()
        files = len(wanted)
        progress = wire.Progress(message.job, files, files, report.bytes_total, report.bytes_total)
        return [progress, wire.Prepared(message.job, True, None, report.to_wire())]

    def _say(self, message: wire.Message) -> None:
        """Send ``message`` when connected, without waiting; lost otherwise (progress only)."""
        ws = self._ws
        if ws is not None and not ws.closed:
            task = asyncio.get_running_loop().create_task(ws.send_str(wire.encode(message)))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def answer(self, message: wire.Message) -> list[wire.Message]:
        """What this node sends back for one message from the master (prepare: :meth:`prepare`)."""
        if isinstance(message, wire.Exec):
            rusage = {"utime": 0.0, "stime": 0.0, "maxrss": 1024.0}
            return [
                wire.Exited(message.job, int(task["task"]), 0, None, dict(rusage))
                for task in message.tasks
            ]
        if isinstance(message, wire.Release):
            self.jobs.discard(message.job)
            self.cache.release(message.job)
        elif isinstance(message, wire.Error):
            log.warning("%s: the master reports an error: %s", self.name, message.message)
        # Signal: every task has already exited; Admission, LateAnswer: never asked for.
        return []

    async def _heartbeats(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # A random first phase: real agents come up at scattered times, so their
        # heartbeats do not all land in the same instant.
        await asyncio.sleep(random.uniform(0, self.heartbeat_s))
        while True:
            beat = wire.Heartbeat(
                load=[0.0, 0.0, 0.0],
                memory={"total": MEMORY_BYTES, "available": MEMORY_BYTES - (2 << 30)},
                cache=self.cache.document(),
                procs=[],
            )
            self.beats.append(time.time())
            try:
                await ws.send_str(wire.encode(beat))
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                return
            await asyncio.sleep(self.heartbeat_s)
