"""The master daemon, run as a real process on 127.0.0.1 with a real state dir.

The node agents here are fake but real peers: WebSocket clients written in the
test that speak the wire messages (launcher.wire) the way the agent must. Jobs
are submitted over the real Unix socket with MasterClient; the test process is
root, so its config sets ``[jobs] allow_root = true``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import tomli_w
from sqlalchemy import select

from cachefs.manifest import Manifest
from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher import config as cfg
from launcher.cli.beoctl import main as beoctl
from launcher.errors import MasterError
from launcher.initialize import initialize
from launcher.isolation import local_services
from launcher.master import capability
from launcher.master.client import MasterClient
from launcher.master.nodehealth import HEALTH_REASON
from launcher.master.tokens import issue_token
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import Event, Job, JobNode, Node
from launcher.state.nodes import add_node, get_node
from launcher.wire import (
    MASTER_TO_NODE,
    Done,
    Exec,
    Exited,
    Health,
    Heartbeat,
    Hello,
    Message,
    Output,
    Prepare,
    Prepared,
    Release,
    Signal,
    decode,
    encode,
)

ROOT = Path(__file__).resolve().parents[2]
M = TypeVar("M", bound=Message)
WAIT_S = 20.0

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="submits as root with allow_root")


@dataclass
class Master:
    config: cfg.Config
    proc: subprocess.Popen[bytes]
    tokens: dict[str, str]
    secret: str

    @property
    def sock(self) -> Path:
        return self.config.state_dir / "run" / "master.sock"

    @property
    def pid_file(self) -> Path:
        return self.config.state_dir / "run" / "master.pid"

    def client(self) -> MasterClient:
        return MasterClient(self.sock)

    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.config.service('control').port}/node"


def _wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _start(config: cfg.Config) -> subprocess.Popen[bytes]:
    code = (
        "import asyncio, sys\n"
        "from launcher.config import load\n"
        "from launcher.master.daemon import serve\n"
        "asyncio.run(serve(load(sys.argv[1])))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(config.path)], cwd=ROOT)
    pid_file = config.state_dir / "run" / "master.pid"
    _wait(
        lambda: (
            (pid_file.exists() and pid_file.read_text().strip() == str(proc.pid))
            or proc.poll() is not None
        ),
        "the master's pid file",
    )
    assert proc.poll() is None, "the master exited at start"
    return proc


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir made by beoctl init once; each test gets a copy (init migrates: slow)."""
    state = tmp_path_factory.mktemp("template") / "state"
    initialize(state)
    return state


@pytest.fixture
def master(initialized: Path) -> Iterator[Master]:
    # Not under tmp_path: pytest makes that 0700, and other users must reach the socket.
    top = Path(tempfile.mkdtemp(prefix="beolaunch-master-"))
    top.chmod(0o755)
    state = top / "state"
    shutil.copytree(initialized, state)
    doc = cfg.render(cfg.load(str(initialized / cfg.CONFIG_NAME)))
    doc["state"] = {
        "dir": str(state),
        "database": cfg.default_database_url(state),
        "secret_file": str(state / "secret"),
    }
    doc["services"] = local_services()
    doc["jobs"] = {"allow_root": True}
    doc["store"] = {"user_quota_bytes": QUOTA}  # test_master_manifests fills it
    (state / cfg.CONFIG_NAME).write_text(tomli_w.dumps(doc))
    config = cfg.load(str(state / cfg.CONFIG_NAME))
    engine = open_engine(config.database_url)
    tokens = {}
    with transaction(engine) as session:
        for name in ("node1", "node2"):
            tokens[name] = issue_token(session, add_node(session, name))
    engine.dispose()
    proc = _start(config)
    m = Master(config, proc, tokens, config.secret_file.read_text().strip())
    try:
        yield m
    finally:
        if m.proc.poll() is None:
            m.proc.send_signal(signal.SIGTERM)
            try:
                m.proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()
        shutil.rmtree(top)


#: The store quota of this module's master (small files only fit under it).
QUOTA = 8 << 20


def _db(m: Master) -> Any:
    return open_engine(m.config.database_url)


def _hello(name: str) -> Hello:
    return Hello(
        name,
        {"cpus": 4, "memory": 8 << 30, "nics": ["eth0"]},
        {"bytes_used": 0, "budget": 1 << 30, "objects": 0, "pinned": 0},
    )


async def _node(
    m: Master, session: aiohttp.ClientSession, name: str, *, token: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(
        m.control_url(), headers={"Authorization": f"Bearer {token or m.tokens[name]}"}
    )
    await ws.send_str(encode(_hello(name)))
    return ws


async def _recv(ws: aiohttp.ClientWebSocketResponse, cls: type[M]) -> M:
    msg = await ws.receive(timeout=WAIT_S)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    message = decode(msg.data, MASTER_TO_NODE)
    assert isinstance(message, cls), message
    return message


def _node_state(m: Master, name: str) -> Node:
    engine = _db(m)
    try:
        with transaction(engine, readonly=True) as session:
            return get_node(session, name)
    finally:
        engine.dispose()


def _wait_up(m: Master, *names: str) -> None:
    _wait(lambda: all(_node_state(m, n).state == "up" for n in names), f"{names} up")


def _manifest(m: Master, owner: int) -> Manifest:
    """A one-file manifest the way beosub makes it: hashed, not stored (the master stores it)."""
    prog = m.config.state_dir.parent / "prog"
    prog.write_bytes(b"#!/bin/sh\necho hi\n")
    prog.chmod(0o755)
    return snapshot(str(prog), [str(prog)], None, owner=owner)


async def _submit(m: Master, manifest: Manifest, nodes: int, tasks: int) -> int:
    return await m.client().submit(
        argv=["/bin/prog", "x"],
        env={"PATH": "/bin"},
        cwd="/tmp",
        nodes=nodes,
        tasks=tasks,
        manifest=manifest.document(),
    )


FILL = {
    "objects_total": 1,
    "objects_hit": 0,
    "bytes_total": 18,
    "bytes_from_master": 18,
    "bytes_from_peers": 0,
    "seconds": 0.01,
}


def test_wrong_token_is_closed_4401_and_changes_nothing(master: Master) -> None:
    async def go() -> int | None:
        async with aiohttp.ClientSession() as session:
            ws = await _node(master, session, "node1", token="not-a-token")
            msg = await ws.receive(timeout=WAIT_S)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            return ws.close_code

    assert asyncio.run(go()) == 4401
    node = _node_state(master, "node1")
    assert (node.state, node.hardware) == ("down", None)


def test_hello_marks_the_node_up_with_its_hardware_and_token_cli(
    master: Master, tmp_path: Path
) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await _node(master, session, "node1")
            await asyncio.to_thread(_wait_up, master, "node1")
            await ws.close()

    asyncio.run(go())
    node = _node_state(master, "node1")
    assert node.hardware == {"cpus": 4, "memory": 8 << 30, "nics": ["eth0"]}
    assert node.address == "127.0.0.1"
    # A token issued by the CLI replaces the old one; it is written 0600.
    out = tmp_path / "node1.token"
    assert (
        beoctl(["--config", str(master.config.path), "node", "token", "node1", "--write", str(out)])
        == 0
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = out.read_text().strip()
    assert _node_state(master, "node1").token_sha256 == hashlib.sha256(token.encode()).hexdigest()


def test_job_runs_after_every_node_accepted_and_reports_the_worst_status(
    master: Master,
) -> None:
    manifest = _manifest(master, owner=0)

    async def go() -> tuple[int, list[Message], dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")
            n2 = await _node(master, session, "node2")
            await asyncio.to_thread(_wait_up, master, "node1", "node2")
            job = await _submit(master, manifest, nodes=2, tasks=3)
            seen: list[Message] = []

            async def watch() -> None:
                async for message in master.client().stream(job):
                    seen.append(message)

            watcher = asyncio.create_task(watch())
            prepares = [await _recv(n1, Prepare), await _recv(n2, Prepare)]
            for p in prepares:
                assert p.job == job
                # The user's files, and the master's /etc (launcher/master/unixroot.py).
                sent = Manifest.from_document(p.manifest)
                assert all(sent.get(e.path) == e for e in manifest)
                assert sent.get("/etc/passwd") is not None and sent.owner == manifest.owner
                port = master.config.service("objects").port
                assert p.sources == [{"url": f"http://127.0.0.1:{port}", "kind": "master"}]
                # a capability for this job's manifest, never the cluster secret
                assert p.token != master.secret
                cap = capability.verify(master.secret, p.token)
                assert cap is not None and (cap.job, cap.manifest) == (job, sent.id)
            await n1.send_str(encode(Prepared(job, True, None, FILL)))
            await n2.send_str(encode(Prepared(job, True, None, FILL)))
            e1, e2 = await _recv(n1, Exec), await _recv(n2, Exec)
            assert [t["task"] for t in e1.tasks] == [0, 2]
            assert [t["task"] for t in e2.tasks] == [1]
            task = e1.tasks[0]
            assert (task["argv"], task["env"], task["cwd"]) == (
                ["/bin/prog", "x"],
                {"PATH": "/bin"},
                "/tmp",
            )
            assert (task["uid"], task["gid"], task["home"]) == (0, 0, "/root")
            assert 0 in task["groups"]
            assert await master.client().signal(job, signal.SIGUSR1) == "sent"
            assert (await _recv(n1, Signal)).signum == signal.SIGUSR1
            assert (await _recv(n2, Signal)).signum == signal.SIGUSR1
            await n1.send_str(encode(Output.of(job, 0, "stdout", b"hello from 0\n")))
            await n1.send_str(encode(_heartbeat(job)))
            ps = await _eventually(master.client().ps, lambda rows: bool(rows))
            await n1.send_str(encode(Exited(job, 0, 0, None, {"utime": 0.1})))
            await n2.send_str(encode(Exited(job, 1, 3, None, {"utime": 0.2})))
            await n1.send_str(encode(Exited(job, 2, 0, None, {})))
            assert (await _recv(n1, Release)).job == job
            assert (await _recv(n2, Release)).job == job
            await asyncio.wait_for(watcher, WAIT_S)
            await n1.close()
            await n2.close()
            return job, seen, ps[0]

    job, seen, proc = asyncio.run(go())
    # The master stored the submitted file (read as the submitter) under its digest.
    assert Store(master.config.store_dir).has(next(iter(manifest.objects())))
    outputs = [m for m in seen if isinstance(m, Output)]
    assert [o.payload() for o in outputs] == [b"hello from 0\n"]
    exited = sorted((m.task, m.node, m.status) for m in seen if isinstance(m, Exited))
    assert exited == [(0, "node1", 0), (1, "node2", 3), (2, "node1", 0)]
    assert seen[-1] == Done(job, 3, None)
    assert proc == {
        "node": "node1",
        "job": job,
        "task": 0,
        "pid": 4242,
        "user": "root",
        "state": "running",
        "cpu": 12.5,
        "rss": 1024,
        "cmd": "/bin/prog x",
    }
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        row = session.get_one(Job, job)
        assert (row.state, row.exit_status) == ("failed", 3)
        assert row.started_at is not None and row.ended_at is not None
        parts = {jn.node.name: jn for jn in row.nodes}
        assert {n: (p.accepted_at is not None, p.exit_status) for n, p in parts.items()} == {
            "node1": (True, 0),
            "node2": (True, 3),
        }
        assert parts["node1"].bytes_from_master == 18
    engine.dispose()


def _heartbeat(job: int) -> Heartbeat:
    return Heartbeat(
        [0.5, 0.4, 0.3],
        {"total": 8 << 30, "available": 4 << 30},
        {"bytes_used": 18, "budget": 1 << 30, "objects": 1, "pinned": 1},
        [
            {
                "job": job,
                "task": 0,
                "pid": 4242,
                "user": "root",
                "state": "running",
                "cpu": 12.5,
                "rss": 1024,
                "cmd": "/bin/prog x",
            }
        ],
    )


async def _eventually(fetch: Any, ok: Any) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        rows = await fetch()
        if ok(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.02)


def test_a_refusing_node_fails_the_job_and_is_drained_until_resumed(master: Master) -> None:
    manifest = _manifest(master, owner=0)

    async def go() -> tuple[int, list[Message]]:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")
            n2 = await _node(master, session, "node2")
            await asyncio.to_thread(_wait_up, master, "node1", "node2")
            job = await _submit(master, manifest, nodes=2, tasks=2)
            await _recv(n1, Prepare)
            await _recv(n2, Prepare)
            await n1.send_str(encode(Prepared(job, True, None, FILL)))
            await n2.send_str(encode(Prepared(job, False, "object abc: sha256 mismatch", {})))
            assert (await _recv(n1, Release)).job == job
            seen = [m async for m in master.client().stream(job)]
            drained = _node_state(master, "node2")
            assert drained.state == "drained"
            assert drained.state_reason is not None and "sha256 mismatch" in drained.state_reason
            # An admin resumes it; its next heartbeat makes it schedulable again.
            config = str(master.config.path)
            assert (
                await asyncio.to_thread(beoctl, ["--config", config, "node", "resume", "node2"])
                == 0
            )
            await n2.send_str(encode(_heartbeat(job)))
            await asyncio.to_thread(_wait_up, master, "node2")
            await n1.close()
            await n2.close()
            return job, seen

    job, seen = asyncio.run(go())
    done = seen[-1]
    assert isinstance(done, Done) and done.status == 1
    assert done.reason is not None and "node2" in done.reason and "sha256 mismatch" in done.reason
    assert not any(isinstance(m, Exited) for m in seen)
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        row = session.get_one(Job, job)
        assert (row.state, row.exit_status, row.started_at) == ("failed", 1, None)
        refused = session.scalars(select(JobNode).where(JobNode.refused_reason.is_not(None))).one()
        assert refused.node.name == "node2"
        assert refused.refused_reason == "object abc: sha256 mismatch"
    engine.dispose()


def test_a_manifest_owned_by_someone_else_is_refused_403(master: Master) -> None:
    manifest = _manifest(master, owner=1000)
    with pytest.raises(MasterError) as caught:
        asyncio.run(_submit(master, manifest, nodes=1, tasks=1))
    assert caught.value.status == 403
    assert "uid 1000" in str(caught.value)
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        assert session.scalars(select(Job)).all() == []
    engine.dispose()


def test_a_syslog_datagram_becomes_an_event_of_its_node(master: Master) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await _node(master, session, "node1")
            await asyncio.to_thread(_wait_up, master, "node1")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(
                    b"<11>Nov 25 12:00:00 node1 kernel: disk on fire\n",
                    ("127.0.0.1", master.config.service("logs").port),
                )

            def logged() -> bool:
                engine = _db(master)
                try:
                    with transaction(engine, readonly=True) as session:
                        return bool(
                            session.scalars(select(Event).where(Event.source == "syslog")).all()
                        )
                finally:
                    engine.dispose()

            await asyncio.to_thread(_wait, logged, "the syslog event")
            await ws.close()

    asyncio.run(go())
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        event = session.scalars(select(Event).where(Event.source == "syslog")).one()
        assert event.level == "error"  # PRI 11 = user.err
        assert event.message == "Nov 25 12:00:00 node1 kernel: disk on fire"
        assert event.node_id == get_node(session, "node1").id
    engine.dispose()


def test_sigterm_removes_the_pid_file_and_the_socket(master: Master) -> None:
    assert stat.S_IMODE(master.sock.stat().st_mode) == 0o666
    assert int(master.pid_file.read_text()) == master.proc.pid
    master.proc.send_signal(signal.SIGTERM)
    assert master.proc.wait(timeout=WAIT_S) == 0
    assert not master.sock.exists()
    assert not master.pid_file.exists()


def test_a_job_survives_a_master_restart_and_completes_from_held_results(
    master: Master,
) -> None:
    manifest = _manifest(master, owner=0)

    async def before() -> int:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")
            await asyncio.to_thread(_wait_up, master, "node1")
            job = await _submit(master, manifest, nodes=1, tasks=1)
            await _recv(n1, Prepare)
            await n1.send_str(encode(Prepared(job, True, None, FILL)))
            await _recv(n1, Exec)
            master.proc.kill()  # SIGKILL: no cleanup, the pid file and socket stay
            master.proc.wait()
            closed = await n1.receive(timeout=WAIT_S)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            return job

    job = asyncio.run(before())
    master.proc = _start(master.config)

    async def after() -> list[Message]:
        async with aiohttp.ClientSession() as session:
            held = {"job": job, "task": 0, "status": 5, "signal": None, "rusage": {"utime": 1.0}}
            ws = await session.ws_connect(
                master.control_url(), headers={"Authorization": f"Bearer {master.tokens['node1']}"}
            )
            await ws.send_str(encode(replace(_hello("node1"), held=[held])))
            assert (await _recv(ws, Release)).job == job
            seen = [m async for m in master.client().stream(job)]
            await ws.close()
            return seen

    seen = asyncio.run(after())
    assert seen == [Done(job, 5, None)]
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        row = session.get_one(Job, job)
        assert (row.state, row.exit_status) == ("failed", 5)
        assert [jn.exit_status for jn in row.nodes] == [5]
        assert get_node(session, "node1").state == "up"
    engine.dispose()


NOBODY = 65534
AS_NOBODY = (
    "import asyncio, json, sys\n"
    "from cachefs.snapshot import snapshot\n"
    "from launcher.errors import MasterError\n"
    "from launcher.master.client import MasterClient\n"
    "client = MasterClient(sys.argv[1])\n"
    "manifest = snapshot('/usr/bin/true', ['/usr/bin/true'], None, owner=int(sys.argv[3]))\n"
    "out = {}\n"
    "try:\n"
    "    out['job'] = asyncio.run(client.submit(argv=['/usr/bin/true'], env={}, cwd='/',\n"
    "        nodes=1, tasks=1, manifest=manifest.document()))\n"
    "except MasterError as exc:\n"
    "    out['job'] = exc.status\n"
    "try:\n"
    "    out['signal_other'] = asyncio.run(client.signal(int(sys.argv[2]), 15))\n"
    "except MasterError as exc:\n"
    "    out['signal_other'] = exc.status\n"
    "print(json.dumps(out))\n"
)


def _as_nobody(master: Master, other_job: int, owner: int) -> dict[str, Any]:
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    out = subprocess.run(
        [*setpriv, sys.executable, "-c", AS_NOBODY, str(master.sock), str(other_job), str(owner)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=WAIT_S,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_the_caller_is_the_socket_peer_uid(master: Master) -> None:
    # Root's job waits (no node is up); nobody may submit as itself, not touch root's job,
    # and not submit a manifest claiming to be root's.
    root_job = asyncio.run(_submit(master, _manifest(master, owner=0), nodes=1, tasks=1))
    mine = _as_nobody(master, root_job, NOBODY)
    assert mine["signal_other"] == 403
    assert _as_nobody(master, root_job, 0)["job"] == 403
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        job = session.get_one(Job, mine["job"])
        assert (job.uid, job.argv, job.state) == (NOBODY, ["/usr/bin/true"], "pending")
        assert session.get_one(Job, root_job).state == "pending"
    engine.dispose()


@pytest.mark.slow
def test_a_node_that_stays_away_is_marked_down(master: Master) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await _node(master, session, "node1")
            await asyncio.to_thread(_wait_up, master, "node1")
            await ws.close()

    asyncio.run(go())
    _wait(lambda: _node_state(master, "node1").state == "down", "node1 down after the grace")
    assert _node_state(master, "node1").state_reason == "agent disconnected"


def test_a_node_with_a_failed_mount_stays_out_until_it_mounts_and_an_admin_drain_stays(
    master: Master,
) -> None:
    """A booted node whose site mount failed says so in its hello: drained with the
    reason, no job goes there; its ``health`` saying the mount came back lifts the
    drain and the queued job runs there. A drain an admin made is never lifted so."""
    manifest = _manifest(master, owner=0)
    problem = "mount /home failed: No such file or directory (10.0.0.1:/home)"
    config = str(master.config.path)

    async def go() -> int:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                master.control_url(), headers={"Authorization": f"Bearer {master.tokens['node1']}"}
            )
            await ws.send_str(encode(replace(_hello("node1"), problems=[problem])))
            await asyncio.to_thread(
                _wait,
                lambda: _node_state(master, "node1").state_reason == HEALTH_REASON + problem,
                "node1 drained with its problem",
            )
            assert _node_state(master, "node1").state == "drained"
            job = await _submit(master, manifest, nodes=1, tasks=1)
            with pytest.raises(TimeoutError):  # nothing is sent to a node kept out
                await ws.receive(timeout=1.5)
            await ws.send_str(encode(Health([])))
            assert (await _recv(ws, Prepare)).job == job  # back in: the queued job comes
            assert _node_state(master, "node1").state in ("up", "busy")
            await ws.close()
            # An admin's drain is the admin's: the node's health does not lift it.
            drain = ["--config", config, "node", "drain", "node1", "--reason", "disk check"]
            assert await asyncio.to_thread(beoctl, drain) == 0
            ws = await session.ws_connect(
                master.control_url(), headers={"Authorization": f"Bearer {master.tokens['node1']}"}
            )
            await ws.send_str(encode(replace(_hello("node1"), problems=[problem])))
            await ws.send_str(encode(Health([])))
            await asyncio.to_thread(_wait, lambda: _events_with(master, "stays drained"), "event")
            row = _node_state(master, "node1")
            assert (row.state, row.state_reason) == ("drained", "disk check")
            await ws.close()
            return job

    asyncio.run(go())
    kept = _events_with(master, "kept out of scheduling")
    assert kept and problem in kept[0]
    assert _events_with(master, "no problems left, back in scheduling")


def _events_with(m: Master, text: str) -> list[str]:
    engine = _db(m)
    try:
        with transaction(engine, readonly=True) as session:
            found = select(Event.message).where(Event.message.contains(text))
            return list(session.scalars(found))
    finally:
        engine.dispose()
