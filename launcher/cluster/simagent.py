"""One simulated node agent: the real control protocol, no cache and no tasks.

It speaks to the master exactly as :mod:`launcher.node.agent` does (the same
URL, bearer token, ``hello``, heartbeats every ``heartbeat_s`` and answers,
all built from :mod:`launcher.wire`'s classes), so the master cannot tell it
from a real one. What it does not do: its cache only counts objects (a
``prepare`` is answered at once with the fill a real agent would report,
every missing object counted as fetched from the master), and every task of
an ``exec`` exits 0 at once with the ``exited`` a real agent sends.
:mod:`launcher.cluster.simnodes` runs many of them in one process.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from cachefs.errors import CachefsError
from cachefs.manifest import Manifest
from launcher import wire

log = logging.getLogger(__name__)

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

    def fill(self, job: int, wanted: dict[str, int]) -> wire.FillReport:
        """Take ``wanted`` (sha256 -> size) as filled from the master and pin it for ``job``."""
        hits = [d for d in wanted if d in self.objects]
        self.objects.update(wanted)
        self.pins[job] = set(wanted)
        return wire.FillReport(
            objects_total=len(wanted),
            objects_hit=len(hits),
            bytes_total=sum(wanted.values()),
            bytes_from_master=sum(size for d, size in wanted.items() if d not in hits),
            fill_seconds=0.0,
        )

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
            "pinned_bytes": sum(self.objects[d] for d in pinned),
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
class SimAgent:
    """One simulated node: ``run`` connects (again after a loss) until cancelled.

    ``beats`` holds the wall-clock time (``time.time()``, seconds) each heartbeat
    was handed to the socket, for measuring when the master recorded it.
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

    async def run(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore) -> None:
        """Serve the master until cancelled, reconnecting after 0.5 s to 10 s (doubling)."""
        delay = 0.5
        headers = {"Authorization": f"Bearer {self.token}"}
        while True:
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
                if ws.close_code == CLOSE_UNKNOWN_TOKEN:
                    log.error("%s: the master refused the token", self.name)
                else:
                    delay = 0.5
                log.warning("%s: lost the master (close code %s)", self.name, ws.close_code)
                self.registered.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        hello = wire.Hello(
            self.name,
            hardware(self.name, self.index),
            self.cache.document(),
            [],
            peer_port=None,
            jobs=sorted(self.jobs),
        )
        try:
            await ws.send_str(wire.encode(hello))
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return
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
                for answer in self.answer(message):
                    await ws.send_str(wire.encode(answer))
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.warning("%s: the control socket failed: %s", self.name, exc)
        finally:
            beat.cancel()
            await asyncio.wait([beat])

    def answer(self, message: wire.Message) -> list[wire.Message]:
        """What this node sends back for one message from the master."""
        if isinstance(message, wire.Prepare):
            try:
                wanted = Manifest.from_document(message.manifest).objects()
            except CachefsError as exc:  # a real agent refuses a bad manifest too
                return [wire.Prepared(message.job, False, f"bad manifest: {exc}")]
            self.jobs.add(message.job)
            fill = self.cache.fill(message.job, wanted)
            files = len(wanted)
            progress = wire.Progress(message.job, files, files, fill.bytes_total, fill.bytes_total)
            return [progress, wire.Prepared(message.job, True, None, fill.to_wire())]
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
