"""The master's limits against a real master (docs/limits.md): a node flooding the
control service is read at its rate and logged once while another node's
heartbeats keep being recorded; a job printing 200 MB to a beosub that never
reads does not grow the master's memory past its output bounds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import aiohttp
import psutil
import pytest
from sqlalchemy import Engine, select

from launcher import wire
from launcher.cluster.simagent import SimAgent, hardware
from launcher.cluster.simnodes import control_url, register, serve
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import Job, Node
from tests.integration.masterproc import running_master

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
#: [jobs] node_message_rate of the flood test's master: low, so a Python client
#: on a shared machine outruns it many times over.
RATE = 200
FLOOD_S = 5.0
#: Bytes of each flooding message (a heartbeat with a padded process list):
#: large enough that what the kernel's socket buffers hold is a few hundred.
FLOOD_MESSAGE = 16 << 10
#: What the socket buffers between the flooder and the master can hold at most
#: (loopback autotuning: tcp_wmem's 4 MiB plus tcp_rmem's 6 MiB), and aiohttp's
#: 128 KiB read buffer. Measured here: 2,039 messages got through in 5 s at
#: 200/s (1,400 of them the rate and burst); 62,440 with no rate.
BUFFERED = (10 << 20) + (128 << 10)
#: Output of the slow-watcher job, and the master's growth allowed while it
#: runs: its bounds are 4 MiB of history and 8 MiB for the watcher; the rest is
#: decoding in flight and the allocator. Unbounded, it held all 200 MB (base64).
PRINTED = 200 << 20
RSS_GROWTH = 64 << 20


@pytest.fixture
def engine_of() -> Iterator[list[Engine]]:
    engines: list[Engine] = []
    yield engines
    for engine in engines:
        engine.dispose()


def last_seen(engine: Engine, name: str) -> datetime | None:
    with transaction(engine, readonly=True) as s:
        return s.scalar(select(Node.last_seen).where(Node.name == name))


async def flood(url: str, name: str, token: str, seconds: float) -> tuple[int, list[str]]:
    """Connect as ``name`` and send heartbeats as fast as the socket takes them
    for ``seconds``: how many were sent, and the errors the master answered."""
    errors: list[str] = []
    padding = [{"pid": 1, "comm": "x" * (FLOOD_MESSAGE - 200)}]
    beat = wire.encode(wire.Heartbeat([0.0, 0.0, 0.0], {}, {}, padding))
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"Authorization": f"Bearer {token}"}) as ws,
    ):
        hello = wire.Hello(name, hardware(name, 99), {}, [], peer_port=None, jobs=[])
        await ws.send_str(wire.encode(hello))

        async def read() -> None:
            async for frame in ws:
                message = wire.decode(frame.data, wire.MASTER_TO_NODE)
                if isinstance(message, wire.Error):
                    errors.append(message.message)

        reader = asyncio.create_task(read())
        sent = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                async with asyncio.timeout(max(0.0, end - time.monotonic())):
                    await ws.send_str(beat)
            except TimeoutError:
                break
            sent += 1
        await asyncio.sleep(0.5)  # the master's word on the last ones
        reader.cancel()
    return sent, errors


@pytest.mark.slow
def test_a_flooding_node_is_read_at_its_rate_and_logged_once(engine_of: list[Engine]) -> None:
    with running_master(jobs={"node_message_rate": RATE}) as m:
        engine = open_engine(m.config.database_url)
        engine_of.append(engine)
        tokens = register(engine, ["calm0", "flood0"])
        url = control_url(m.config)
        calm = SimAgent(url, "calm0", tokens["calm0"], 0, heartbeat_s=0.3)

        async def main() -> tuple[int, list[str], datetime | None, datetime | None]:
            ready = asyncio.Event()
            agents = asyncio.create_task(serve([calm], ready))
            try:
                await ready.wait()
                await asyncio.sleep(1.5)  # a first flush of its heartbeats
                before = last_seen(engine, "calm0")
                sent, errors = await flood(url, "flood0", tokens["flood0"], FLOOD_S)
                after = last_seen(engine, "calm0")
                return sent, errors, before, after
            finally:
                agents.cancel()
                await asyncio.gather(agents, return_exceptions=True)

        sent, errors, before, after = asyncio.run(main())
        log = m.new_log()

    # Read at RATE a second after a two-second burst, plus twice what the buffers
    # hold; unthrottled, the master reads what this client sends (>10,000 a second).
    bound = RATE * (FLOOD_S + 2) + 2 * BUFFERED // FLOOD_MESSAGE
    assert sent <= bound, f"{sent} messages in {FLOOD_S} s got through a rate of {RATE}/s"
    lines = [line for line in log.splitlines() if "control messages a second" in line]
    assert len(lines) == 1 and "node flood0 sends more than 200" in lines[0], log[-3000:]
    assert [e for e in errors if "messages a second" in e] == [
        "you send more than 200 messages a second; read at that rate"
    ]
    # The calm node's heartbeats were recorded all along.
    assert before is not None and after is not None
    assert (after - before).total_seconds() >= FLOOD_S - 1.5


class Printer(SimAgent):
    """A simulated node whose every task prints PRINTED bytes (64 KiB messages, as
    a real agent relays ``yes``) before it exits."""

    def answer(self, message: wire.Message) -> list[wire.Message]:
        if not isinstance(message, wire.Exec):
            return super().answer(message)
        out: list[wire.Message] = []
        for task in message.tasks:
            chunk = wire.Output.of(message.job, int(task["task"]), "stdout", b"y\n" * (32 << 10))
            out += [chunk] * (PRINTED // (64 << 10))  # one object, sent many times
        return out + super().answer(message)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs beosub as nobody")
@pytest.mark.slow
def test_a_watcher_that_never_reads_does_not_grow_the_master(
    top: Path, engine_of: list[Engine]
) -> None:
    with running_master() as m:
        engine = open_engine(m.config.database_url)
        engine_of.append(engine)
        tokens = register(engine, ["print0"])
        printer = Printer(control_url(m.config), "print0", tokens["print0"], 0, heartbeat_s=5.0)
        m.config.state_dir.chmod(0o755)
        master = psutil.Process(m.proc.pid)

        async def main() -> tuple[int, int, bytes, bytes, int | None]:
            ready = asyncio.Event()
            agents = asyncio.create_task(serve([printer], ready))
            try:
                await ready.wait()
                await asyncio.sleep(1.5)  # up in the database: schedulable
                start_rss = master.memory_info().rss
                # beosub's stdout is a pipe nobody reads until the job has ended:
                # a terminal stopped with Ctrl-S.
                beosub = await asyncio.create_subprocess_exec(
                    "setpriv",
                    f"--reuid={NOBODY}",
                    f"--regid={NOBODY}",
                    "--clear-groups",
                    str(ROOT / ".venv" / "bin" / "beosub"),
                    "--",
                    "/bin/true",
                    cwd=top,
                    env={**os.environ, "HOME": str(top), "BEOLAUNCH_CONFIG": str(m.config.path)},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                peak = start_rss
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    peak = max(peak, master.memory_info().rss)
                    with transaction(engine, readonly=True) as s:
                        job = s.scalars(select(Job)).first()
                    if job is not None and job.exit_status is not None:
                        break
                    await asyncio.sleep(0.1)
                stdout, stderr = await asyncio.wait_for(beosub.communicate(), 60)
                return start_rss, peak, stdout, stderr, beosub.returncode
            finally:
                agents.cancel()
                await asyncio.gather(agents, return_exceptions=True)

        start_rss, peak, stdout, stderr, status = asyncio.run(main())
        log = m.new_log()

    assert status == 0, stderr[-2000:]  # the job itself was neither slowed nor failed
    assert b"output dropped: " in stderr and b"you were too slow" in stderr, stderr[-2000:]
    assert len(stdout) < PRINTED  # some was dropped for it ...
    assert stdout.endswith(b"y\n") and len(stdout) > 0  # ... and it read on afterwards
    growth = peak - start_rss
    assert growth < RSS_GROWTH, f"master grew {growth >> 20} MiB; log: {log[-2000:]}"
