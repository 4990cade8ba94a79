"""The master keeps answering while its database stalls (issue 15, item 2).

A real master process (masterproc.py) with three raw WebSocket nodes that
heartbeat. Another connection holds the SQLite state database's write lock
(``BEGIN EXCLUSIVE``) for STALL_S seconds, as a stuck CLI, a Slurm prolog or a
slow PostgreSQL fsync would. While it does, the master must still answer a
node's message and ``beostat nodes`` / ``beostat ps`` in well under the stall:
its database work runs in threads (launcher/master/dbwork.py) and heartbeats
are written in batches. Before that, the first heartbeat of the stall blocked
the event loop on the lock for the whole stall (busy timeout 30 s).

A Slurm admit (refused: its manifest is not in the store, so the node is
drained) and a burst of syslog datagrams arrive during the stall too: both
used to write on the event loop. Their records must be written once the lock
is gone, and the node must get its ``admission`` answer then.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
from datetime import datetime

import aiohttp
import pytest

from launcher.master.tokens import issue_token
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import Event, Node
from launcher.state.nodes import add_node
from launcher.wire import (
    MASTER_TO_NODE,
    Admission,
    Admit,
    Error,
    Heartbeat,
    Hello,
    decode,
    encode,
)
from tests.integration.masterproc import Master, running_master

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the master's state dir is root's")

NODES = ("node1", "node2", "node3")
#: Seconds the database's write lock is held.
STALL_S = 3.0
#: The slowest answer taken during the stall (the stall is STALL_S).
ANSWER_S = 1.0
#: Syslog datagrams sent during the stall.
LINES = 100
#: The Slurm job id of the admit sent during the stall.
SLURM_JOB = 77


def _hello(name: str) -> Hello:
    return Hello(
        name,
        {"cpus": 2, "memory": 1 << 30, "nics": ["eth0"]},
        {"bytes_used": 0, "budget": 1 << 30, "objects": 0, "pinned": 0},
    )


def _beat() -> Heartbeat:
    return Heartbeat([0.1, 0.1, 0.1], {"total": 1 << 30, "available": 1 << 29}, {}, [])


def _register(m: Master) -> dict[str, str]:
    engine = open_engine(m.config.database_url)
    try:
        with transaction(engine) as session:
            return {name: issue_token(session, add_node(session, name)) for name in NODES}
    finally:
        engine.dispose()


async def _get(user: aiohttp.ClientSession, path: str) -> tuple[float, object]:
    started = time.monotonic()
    async with user.get(f"http://master{path}") as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    return time.monotonic() - started, body


async def _round_trip(ws: aiohttp.ClientWebSocketResponse) -> float:
    """Seconds from a message the master cannot decode to its ``error`` answer."""
    started = time.monotonic()
    await ws.send_str('{"type": "no-such-message"}')
    while True:
        msg = await ws.receive(timeout=STALL_S * 3)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        if isinstance(decode(msg.data, MASTER_TO_NODE), Error):
            return time.monotonic() - started


async def _beat_forever(ws: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        await ws.send_str(encode(_beat()))
        await asyncio.sleep(0.2)


def _send_syslog(m: Master, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for n in range(count):
            udp.sendto(f"<14>stall line {n}".encode(), ("127.0.0.1", m.config.service("logs").port))


async def _admission(ws: aiohttp.ClientWebSocketResponse) -> Admission:
    """The next ``admission`` the node gets (what else it gets is skipped)."""
    while True:
        msg = await ws.receive(timeout=STALL_S * 3)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        message = decode(msg.data, MASTER_TO_NODE)
        if isinstance(message, Admission):
            return message


def _stall_records(m: Master) -> tuple[int, tuple[str, str | None]]:
    """Syslog lines of the stall written, and node3's state and reason."""
    engine = open_engine(m.config.database_url)
    try:
        with transaction(engine, readonly=True) as session:
            lines = session.query(Event).filter(Event.message.like("%stall line %")).count()
            node = session.query(Node).filter(Node.name == "node3").one()
            return lines, (node.state, node.state_reason)
    finally:
        engine.dispose()


def _last_seen(m: Master) -> dict[str, datetime | None]:
    engine = open_engine(m.config.database_url)
    try:
        with transaction(engine, readonly=True) as session:
            return {n.name or "": n.last_seen for n in session.query(Node)}
    finally:
        engine.dispose()


async def _scenario(m: Master, tokens: dict[str, str]) -> None:
    user_conn = aiohttp.UnixConnector(path=str(m.sock))
    async with (
        aiohttp.ClientSession() as nodes,
        aiohttp.ClientSession(connector=user_conn) as user,
    ):
        url = f"http://127.0.0.1:{m.config.service('control').port}/node"
        sockets = {}
        for name in NODES:
            ws = await nodes.ws_connect(url, headers={"Authorization": f"Bearer {tokens[name]}"})
            await ws.send_str(encode(_hello(name)))
            sockets[name] = ws
        deadline = time.monotonic() + 20
        while True:
            _took, rows = await _get(user, "/nodes")
            assert isinstance(rows, list)
            if sorted(r["name"] for r in rows if r["state"] == "up") == list(NODES):
                break
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.1)

        database = open_engine(m.config.database_url).url.database
        assert database
        lock = sqlite3.connect(database, isolation_level=None, timeout=10)
        beating = [asyncio.create_task(_beat_forever(ws)) for ws in sockets.values()]
        lock.execute("BEGIN EXCLUSIVE")
        # Released on a timer, whatever the master does meanwhile.
        release = asyncio.get_running_loop().call_later(STALL_S, lock.rollback)
        try:
            await asyncio.sleep(0.5)  # heartbeats meet the lock first
            admit = Admit(SLURM_JOB, "e" * 64, os.getuid(), os.getgid(), "root", "/tmp")
            await sockets["node3"].send_str(encode(admit))
            _send_syslog(m, LINES)
            answers = {"message": await _round_trip(sockets["node1"])}
            answers["beostat ps"], _ = await _get(user, "/ps")
            answers["beostat nodes"], rows = await _get(user, "/nodes")
            answers["message again"] = await _round_trip(sockets["node2"])
            slow = {what: round(took, 2) for what, took in answers.items() if took > ANSWER_S}
            assert not slow, f"the master stalled with its database: {slow} s"
            await asyncio.sleep(0.2)
            assert lock.in_transaction, f"the answers themselves took the stall: {answers}"
            while lock.in_transaction:
                await asyncio.sleep(0.1)
        finally:
            release.cancel()
            if lock.in_transaction:
                lock.rollback()
            lock.close()
            for task in beating:
                task.cancel()
        # "last heard" comes from the master's memory: heartbeats of the stall count.
        assert isinstance(rows, list)
        for row in rows:
            heard = datetime.fromisoformat(row["last_seen"])
            assert time.time() - heard.timestamp() < 2.0 + STALL_S, row

        # Once the lock is gone the batched heartbeats reach the rows.
        released = time.time()
        deadline = time.monotonic() + 10
        while True:
            seen = _last_seen(m)
            if all(at is not None and at.timestamp() >= released - 0.5 for at in seen.values()):
                break
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.2)

        # What came during the stall was held, not lost: written once the lock went.
        answer = await _admission(sockets["node3"])
        assert (answer.slurm_job, answer.accepted) == (SLURM_JOB, False), answer
        assert "is not in the master's store" in (answer.reason or ""), answer
        deadline = time.monotonic() + 10
        while True:
            lines, node3 = _stall_records(m)
            if lines == LINES and node3[0] == "drained":
                break
            assert time.monotonic() < deadline, (lines, node3)
            await asyncio.sleep(0.2)
        assert f"refused slurm job {SLURM_JOB}" in (node3[1] or ""), node3
        for ws in sockets.values():
            await ws.close()


@pytest.mark.slow
def test_the_master_answers_while_its_database_is_locked() -> None:
    with running_master() as m:
        tokens = _register(m)
        asyncio.run(_scenario(m, tokens))
