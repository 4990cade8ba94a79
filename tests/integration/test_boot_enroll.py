"""Who can enroll as a node (issue 12, item 3), over real sockets on loopback.

The real boot service (``BootHttp``) and control service (``NodeRegistry``) of a
master run in a thread's event loop on 127.0.0.1, on SQLite and PostgreSQL.
The node n1 booted once from 127.0.0.2 (proxy mode: the address it asked from
while pending is its address); another machine on the cluster network is
127.0.0.3. Requests choose their source address and port, so "root on the
node" (a port below 1024 from 127.0.0.2), "an ordinary job on the node" (an
ephemeral port from 127.0.0.2) and "someone elsewhere" are each real callers.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import Engine, select

from bootsvc.settings import parse
from launcher.master.boothttp import BootHttp, BootHttpSettings
from launcher.master.bootnodes import accept_node
from launcher.master.dbwork import DbWork
from launcher.master.metrics import Metrics
from launcher.master.nodes import NodeRegistry, control_app
from launcher.master.tokens import issue_token
from launcher.node import boot
from launcher.state.bootimages import store_image
from launcher.state.db import transaction
from launcher.state.models import Event, Node
from launcher.state.nodes import get_node
from launcher.wire import Hello, encode
from tests.integration.vcluster import Poll

MAC = "52:54:00:31:0c:01"
HYPHENS = MAC.replace(":", "-")
NODE = "127.0.0.2"  # n1's address
ELSEWHERE = "127.0.0.3"  # another machine on the cluster network
PROXY = parse(
    {
        "interface": "lo",
        "network": "127.0.0.0/24",
        "master_address": "127.0.0.1",
        "mode": "proxy",
    }
)
poll = Poll(seconds=20)


def _root() -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("a privileged source port needs root")


class Master:
    """The boot and control services of one master, on 127.0.0.1, in a thread's loop."""

    def __init__(self, engine: Engine, state_dir: Path, **settings: Any) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        #: fed as the daemon feeds it: tickets issued, agents registering
        self.metrics = Metrics()
        self.registry = NodeRegistry(DbWork(engine), grace_s=0.1, on_up=self.metrics.node_up)
        self.settings = BootHttpSettings(
            state_dir=state_dir,
            http=("127.0.0.1", 0),
            logs_port=5514,
            control=("127.0.0.1", 0),
            peer_port=4874,
            master_address="127.0.0.1",
            **settings,
        )
        self.runners: list[web.AppRunner] = []
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.sessions: list[aiohttp.ClientSession] = []

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    async def _serve(self, app: web.Application) -> int:
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        self.runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    def start(self) -> None:
        self.thread.start()
        control = self.run(self._serve(control_app(self.registry)))
        # The addresses the scripts and enroll answers name need the real ports.
        self.settings = replace(self.settings, control=("127.0.0.1", control))
        service = BootHttp(
            self.engine,
            self.settings,
            connected=lambda name: name in self.registry.links,
            on_boot=self.metrics.boot_started,
        )
        port = self.run(self._serve(service.app()))
        self.settings = replace(self.settings, http=("127.0.0.1", port))
        service.settings = self.settings

    def stop(self) -> None:
        async def down() -> None:
            for ws in self.sockets:
                await ws.close()
            for session in self.sessions:
                await session.close()
            await self.registry.close_all()
            for runner in reversed(self.runners):
                await runner.cleanup()

        self.run(down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    # --- callers -------------------------------------------------------------------

    def request(
        self, method: str, path: str, source: str, *, port: int = 0, body: object = None
    ) -> tuple[int, str]:
        """One request from ``source``:``port`` (0: an ephemeral port, as any user gets;
        None for a privileged one: the first free port below 1024, as root gets)."""
        if port is None or 0 < port < 1024:
            ports = [port] if port else boot.enroll_ports()
            sock = boot.privileged_socket(
                "test", "127.0.0.1", self.settings.http[1], 10, ports, source
            )
            connection = http.client.HTTPConnection("127.0.0.1", self.settings.http[1], timeout=10)
            connection.sock = sock
        else:
            connection = http.client.HTTPConnection(
                "127.0.0.1", self.settings.http[1], timeout=10, source_address=(source, port)
            )
        try:
            data = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, body=data, headers={"Connection": "close"})
            answer = connection.getresponse()
            return answer.status, answer.read().decode()
        finally:
            connection.close()

    def script(self, source: str = NODE) -> tuple[int, str]:
        return self.request("GET", f"/boot/{HYPHENS}.ipxe", source)

    def ticket(self, source: str = NODE) -> str:
        """The ticket of a boot script asked for from ``source``."""
        status, text = self.script(source)
        assert status == 200 and "beolaunch.ticket=" in text, text
        return text.split("beolaunch.ticket=", 1)[1].split()[0]

    def enroll(self, ticket: str, source: str = NODE, port: int | None = None) -> tuple[int, Any]:
        status, text = self.request(
            "POST", "/boot/enroll", source, port=port, body={"ticket": ticket}
        )
        return status, json.loads(text)

    def hello(self, name: str, token: str) -> aiohttp.ClientWebSocketResponse:
        """A control session of node ``name`` that stays open (``bye`` closes it)."""

        async def go() -> aiohttp.ClientWebSocketResponse:
            # From the node's address, as its agent does (hello records it as the address).
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(NODE, 0)))
            self.sessions.append(session)
            ws = await session.ws_connect(
                f"ws://127.0.0.1:{self.settings.control[1]}/node",
                headers={"Authorization": f"Bearer {token}"},
            )
            cache = {"bytes_used": 0, "budget": 1 << 30, "objects": 0, "pinned": 0}
            await ws.send_str(encode(Hello(name, {"cpus": 1}, cache)))
            self.sockets.append(ws)
            return ws

        ws = self.run(go())
        poll(f"{name} connected", lambda: name in self.registry.links)
        return ws

    def bye(self, name: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.run(ws.close())
        poll(f"{name} gone", lambda: name not in self.registry.links)

    def node(self) -> Node:
        with transaction(self.engine, readonly=True) as session:
            found = session.scalars(select(Node).where(Node.mac == MAC)).one()
            session.expunge(found)
            return found

    def events(self, part: str) -> list[str]:
        with transaction(self.engine, readonly=True) as session:
            rows = session.scalars(select(Event.message).where(Event.message.contains(part)))
            return list(rows)


def _master(engine: Engine, tmp_path: Path, **settings: Any) -> Iterator[Master]:
    _root()
    master = Master(engine, tmp_path, **settings)
    master.start()
    try:
        yield master
    finally:
        master.stop()


@pytest.fixture
def master(engine: Engine, tmp_path: Path) -> Iterator[Master]:
    """A master whose n1 asked once from 127.0.0.2, was accepted, and has images to boot."""
    for m in _master(engine, tmp_path):
        status, text = m.script(NODE)
        assert status == 200 and f"beoctl node accept {MAC}" in text
        with transaction(engine) as session:
            assert accept_node(session, MAC, name="n1", boot=PROXY).address == NODE
            for kind in ("kernel", "stage2", "stage3"):
                store_image(
                    session, tmp_path, secrets.token_bytes(64), kind=kind, name=kind, built_from={}
                )
        yield m


def test_a_ticket_only_to_the_nodes_own_address_and_said_once(
    master: Master, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(5):  # iPXE asks again every 5 s; an attacker faster
        status, text = master.script(ELSEWHERE)
        assert status == 200 and "beolaunch.ticket" not in text
        assert f"node n1 asked from {ELSEWHERE}, not from its address {NODE}" in text
        assert "dhcp || goto retry" in text  # a node on a stale pool lease asks again
    assert master.node().boot_ticket_sha256 is None
    said = f"node n1: no boot ticket for {ELSEWHERE}"
    assert len(master.events(said)) == 1
    assert sum(said in r.getMessage() for r in caplog.records) == 1
    master.ticket(NODE)
    assert master.node().boot_ticket_sha256 is not None


def test_each_script_replaces_the_ticket_and_a_ticket_is_spent_once(master: Master) -> None:
    old = master.ticket()
    new = master.ticket()  # the real node rebooted: its iPXE asked again
    status, refused = master.enroll(old)
    assert status == 403 and "unknown or already used" in refused["error"]
    status, enrolled = master.enroll(new)
    assert status == 200 and enrolled["name"] == "n1"
    status, refused = master.enroll(new)
    assert status == 403 and "unknown or already used" in refused["error"]


def test_enroll_only_from_a_privileged_port_of_the_nodes_address(master: Master) -> None:
    ticket = master.ticket()
    # An ordinary job on n1 that read the ticket (from /proc/cmdline, say): no root, no port.
    status, refused = master.enroll(ticket, NODE, port=0)
    assert status == 403 and "privileged source port" in refused["error"]
    # Root on another machine that sniffed it: the wrong address.
    status, refused = master.enroll(ticket, ELSEWHERE, port=None)
    assert status == 403 and "not from node n1's address" in refused["error"]
    assert master.node().token_sha256 is None
    # Root on n1, through the node's own enroll client: the ticket is still good.
    env = boot.BootEnv("127.0.0.1", master.settings.http[1], None, "n1", ticket, None, NODE)
    enrolled = boot.enroll(env)
    assert enrolled.name == "n1" and enrolled.control_url.startswith("ws://127.0.0.1:")
    node = master.node()
    assert node.token_sha256 is not None and node.boot_ticket_sha256 is None
    with pytest.raises(boot.EnrollRefusedError, match="already used"):
        boot.enroll(env)


def test_no_ticket_while_the_node_is_connected(master: Master) -> None:
    status, enrolled = master.enroll(master.ticket())
    assert status == 200
    ws = master.hello("n1", enrolled["token"])
    # one boot timed: from the ticket's script to the agent's hello
    assert master.metrics.registry.get_sample_value("beolaunch_boot_seconds_count") == 1
    # A job on n1 (its address) asks for n1's script: n1 is up, so no ticket.
    status, text = master.script(NODE)
    assert status == 200 and "node n1 is connected" in text and "beolaunch.ticket" not in text
    assert "dhcp" not in text
    assert master.node().boot_ticket_sha256 is None
    master.bye("n1", ws)  # the node rebooted: its session ended
    assert master.ticket()


def test_a_ticket_issued_before_the_node_connected_is_refused_and_cleared(
    master: Master,
) -> None:
    ticket = master.ticket()
    with transaction(master.engine) as session:
        token = issue_token(session, get_node(session, "n1"))  # beoctl node token
    ws = master.hello("n1", token)
    status, refused = master.enroll(ticket)
    assert status == 403 and "node n1 is connected" in refused["error"]
    assert master.node().boot_ticket_sha256 is None
    master.bye("n1", ws)
    status, refused = master.enroll(ticket)
    assert status == 403 and "unknown or already used" in refused["error"]


def test_an_expired_ticket_is_refused(engine: Engine, tmp_path: Path) -> None:
    for m in _master(engine, tmp_path, ticket_ttl_s=1):
        assert m.script(NODE)[0] == 200
        with transaction(engine) as session:
            accept_node(session, MAC, name="n1", boot=PROXY)
            for kind in ("kernel", "stage2", "stage3"):
                store_image(session, tmp_path, kind.encode(), kind=kind, name=kind, built_from={})
        ticket = m.ticket()
        time.sleep(1.2)
        status, refused = m.enroll(ticket)
        assert status == 403 and "expired" in refused["error"]


def _mac(i: int) -> str:
    return f"52-54-00-31-0d-{i:02x}"


def test_new_macs_are_rate_limited_per_address_and_overall(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    limits = {"new_nodes_per_minute": 3, "new_nodes_per_address_per_minute": 2}
    for m in _master(engine, tmp_path, **limits):
        assert [m.request("GET", f"/boot/{_mac(i)}.ipxe", NODE)[0] for i in (1, 2)] == [200] * 2
        for i in range(3, 8):
            status, text = m.request("GET", f"/boot/{_mac(i)}.ipxe", NODE)
            assert status == 429
            assert f"too many new nodes from {NODE} (at most 2 a minute" in text
        assert m.request("GET", f"/boot/{_mac(1)}.ipxe", NODE)[0] == 200  # known: answered
        assert m.request("GET", f"/boot/{_mac(8)}.ipxe", ELSEWHERE)[0] == 200
        status, text = m.request("GET", f"/boot/{_mac(9)}.ipxe", "127.0.0.4")
        assert status == 503 and "too many new nodes at once (at most 3 a minute)" in text
        with transaction(engine, readonly=True) as session:
            pending = session.scalars(select(Node.mac).where(Node.state == "pending")).all()
        assert len(pending) == 3
        lines = [
            r.getMessage() for r in caplog.records if "too many new nodes from" in r.getMessage()
        ]
        assert len(lines) == 1  # once per interval, not per request


def test_pending_nodes_are_bounded(engine: Engine, tmp_path: Path) -> None:
    for m in _master(engine, tmp_path, max_pending=2):
        sources = ("127.0.0.5", "127.0.0.6", "127.0.0.7")
        answers = [m.request("GET", f"/boot/{_mac(i)}.ipxe", s) for i, s in enumerate(sources)]
        assert [status for status, _ in answers] == [200, 200, 503]
        assert "nodes are pending already ([boot] max_pending = 2)" in answers[2][1]
        assert "beoctl node list --pending" in answers[2][1]
