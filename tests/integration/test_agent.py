"""The node agent against a master that speaks the control protocol for real.

The master here is a test-written aiohttp WebSocket server on 127.0.0.1 (a
real peer: it checks the token, decodes with the node allow-list, sends
encoded master messages); the objects come from the real object service over
a real store holding the closure of /bin/sh and /bin/sleep. The agent under
test is the real one: real cache fill, real environment root (FUSE), real
sandboxed processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from aiohttp import web

from cachefs.cache import NodeCache
from cachefs.closure import resolve
from cachefs.manifest import Entry, Manifest, build
from cachefs.service import base_url, secret_token_check, serve
from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher import wire
from launcher.envconfig import DEFAULT_NODE_FILES
from launcher.node.agent import AgentOptions, run_agent
from launcher.node.outbox import load_held
from launcher.node.roots.envroot import mounts_under

NODE_TOKEN = "node-token-1"
OBJECTS_TOKEN = "objects-secret"
BUDGET = 256 << 20
WAIT_S = 20.0  # a deadline for what should happen at once, never a timing assertion

needs_sandbox = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
    reason="tasks run in a mount namespace chrooted into a FUSE root: needs root and /dev/fuse",
)

M = TypeVar("M", bound=wire.Message)


@dataclass
class FakeMaster:
    """The master side of the control protocol, one node at a time."""

    token: str
    accepting: bool = True
    hellos: int = 0
    refused: int = 0
    received: asyncio.Queue[wire.Message] = field(default_factory=asyncio.Queue)
    ws: web.WebSocketResponse | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            return web.Response(status=503, text="master restarting")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused += 1
            await ws.close(code=4401, message=b"unknown node token")
            return ws
        self.ws = ws
        async for frame in ws:
            message = wire.decode(frame.data, wire.NODE_TO_MASTER)
            if isinstance(message, wire.Hello):
                self.hellos += 1
            self.received.put_nowait(message)
        return ws

    async def send(self, message: wire.Message) -> None:
        assert self.ws is not None
        await self.ws.send_str(wire.encode(message))

    async def expect(self, cls: type[M], match: Callable[[M], bool] = lambda m: True) -> M:
        """The next ``cls`` message that ``match``es (others are skipped)."""
        async with asyncio.timeout(WAIT_S):
            while True:
                message = await self.received.get()
                if isinstance(message, cls) and match(message):
                    return message

    async def run_task(self, job: int, task: int) -> tuple[bytes, wire.Exited]:
        """Output (stdout and stderr) of one task until its exit."""
        out = b""
        async with asyncio.timeout(WAIT_S):
            while True:
                message = await self.received.get()
                if isinstance(message, wire.Output) and (message.job, message.task) == (job, task):
                    out += message.payload()
                elif isinstance(message, wire.Exited) and (message.job, message.task) == (
                    job,
                    task,
                ):
                    return out, message


@dataclass
class Cluster:
    master: FakeMaster
    opts: AgentOptions
    objects_url: str
    manifest: Manifest
    agent: asyncio.Task[None] | None = None

    async def away_until_exited(self, job: int) -> None:
        """Take the master down (reconnects get 503), let ``job``'s task go on past
        its wait for /tmp/go, and return once the agent holds its exit."""
        self.master.accepting = False
        assert self.master.ws is not None
        await self.master.ws.close()
        (self.opts.roots_dir / "u0" / f"{job}.tmp" / "go").touch()
        await until(lambda: bool(load_held(self.opts.state_file)))

    async def registered_and_prepared(self, job: int) -> None:
        """Wait for the agent's hello, then have it prepare ``job`` (accepted)."""
        await self.master.expect(wire.Hello)
        await self.master.send(self.prepare(job))
        assert (await self.master.expect(wire.Prepared)).accepted

    def prepare(self, job: int) -> wire.Prepare:
        sources = [{"url": self.objects_url, "kind": "master"}]
        return wire.Prepare(job, self.manifest.document(), sources, OBJECTS_TOKEN)

    def exec(self, job: int, script: str, task: int = 0) -> wire.Exec:
        doc = {
            "task": task,
            "argv": ["/bin/sh", "-c", script],
            "env": {"PATH": "/usr/bin:/bin"},
            "cwd": "/",
            "uid": 0,
            "gid": 0,
            "groups": [],
            "home": None,
            "allow_root": True,
        }
        return wire.Exec(job, [doc])


@pytest.fixture
def store(tmp_path: Path) -> tuple[Store, Manifest]:
    s = Store(tmp_path / "store")
    env = {"PATH": "/usr/bin:/bin"}
    paths = {p for prog in ("/bin/sh", "/bin/sleep") for p in resolve(prog, env=env).paths}
    return s, snapshot("/bin/sh", sorted(paths), s)


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, store: tuple[Store, Manifest], *, agent: bool = True, **options: Any
) -> AsyncIterator[Cluster]:
    """The fake master, the object service and (with ``agent``) a running agent in
    this event loop; all stopped after."""
    s, manifest = store
    master = FakeMaster(NODE_TOKEN)
    app = web.Application()
    app.router.add_get("/node", master.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    objects = await serve(s, secret_token_check(OBJECTS_TOKEN))
    host, port = runner.addresses[0][:2]
    settings: dict[str, Any] = {
        "master_url": f"ws://{host}:{port}/node",
        "name": "node7",
        "token": NODE_TOKEN,
        "cache_dir": tmp_path / "node" / "cache",
        "roots_dir": tmp_path / "node" / "roots",
        "cache_budget": BUDGET,
        "state_file": tmp_path / "node" / "agent-state.json",
        "heartbeat_s": 0.2,
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.2,
    }
    opts = AgentOptions(**{**settings, **options})
    running = asyncio.create_task(run_agent(opts)) if agent else None
    try:
        yield Cluster(master, opts, base_url(objects), manifest, running)
    finally:
        if running is not None:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        await objects.cleanup()
        await runner.cleanup()
        sweep(tmp_path)


def sweep(base: Path) -> None:
    """What a failed test may leave: processes chrooted or mounted under ``base``
    (tasks of a killed agent, FUSE servers) and mounts under it."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            root = os.readlink(f"/proc/{proc.pid}/root")
        except OSError:
            continue
        if root.startswith(f"{base}/") or any(str(base) in a for a in proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                proc.kill()
    for point in mounts_under(base):
        subprocess.run(["umount", "-l", point], check=False)


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    """A running process (a zombie already killed waits for init to reap it: not alive)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_hello_carries_the_hardware_report_and_cache(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            hello = await c.master.expect(wire.Hello)
            assert hello.name == "node7"
            assert hello.hardware["cpus_logical"] == psutil.cpu_count()
            assert hello.hardware["memory_bytes"] == psutil.virtual_memory().total
            assert {n["name"] for n in hello.hardware["nics"]} >= {"lo"}
            assert hello.cache == {
                "bytes_used": 0,
                "budget": BUDGET,
                "objects": 0,
                "pinned": 0,
                "pinned_bytes": 0,
            }
            assert hello.held == []
            beat = await c.master.expect(wire.Heartbeat)
            assert len(beat.load) == 3 and beat.memory["total"] == psutil.virtual_memory().total

    asyncio.run(scenario())


def test_the_nodes_problems_go_in_its_hello_and_a_health_message_when_they_change(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    problems = ["mount /home failed: Connection refused"]

    async def scenario() -> None:
        async with cluster(tmp_path, store, health=lambda: tuple(problems)) as c:
            assert (await c.master.expect(wire.Hello)).problems == problems
            first = await asyncio.wait_for(c.master.received.get(), WAIT_S)
            assert isinstance(first, wire.Heartbeat)  # unchanged: no health message
            problems.clear()  # the retry mounted it
            said = await asyncio.wait_for(c.master.received.get(), WAIT_S)
            assert said == wire.Health([])  # before the next heartbeat, and once
            for _ in range(2):
                beat = await asyncio.wait_for(c.master.received.get(), WAIT_S)
                assert isinstance(beat, wire.Heartbeat)

    asyncio.run(scenario())


def test_a_refused_token_is_retried_and_never_registers(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store, token="wrong") as c:
            await until(lambda: c.master.refused >= 3)  # it keeps trying (the admin may fix it)
            assert c.master.hellos == 0 and c.master.received.empty()

    asyncio.run(scenario())


def test_prepare_fills_and_pins_then_answers_with_the_figures(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    _, manifest = store
    objects = manifest.objects()

    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.master.expect(wire.Hello)
            await c.master.send(c.prepare(1))
            # the last progress report comes before the answer, with the totals
            done = await c.master.expect(wire.Progress)
            while done.files_done < done.files_total:
                done = await c.master.expect(wire.Progress)
            first = await c.master.expect(wire.Prepared)
            await c.master.send(c.prepare(2))
            second = await c.master.expect(wire.Prepared)
        assert (first.job, first.accepted, first.reason) == (1, True, None)
        assert first.fill["objects_total"] == len(objects)
        assert first.fill["objects_hit"] == 0
        assert first.fill["bytes_total"] == first.fill["bytes_from_master"] == sum(objects.values())
        assert first.fill["bytes_from_peers"] == 0
        total = (1, len(objects), sum(objects.values()))
        assert (done.job, done.files_total, done.bytes_done) == total
        assert (second.accepted, second.fill["objects_hit"], second.fill["bytes_from_master"]) == (
            True,
            len(objects),
            0,
        )
        with NodeCache(c.opts.cache_dir, BUDGET) as cache:
            for sha in objects:
                assert hashlib.sha256(cache.object_path(sha).read_bytes()).hexdigest() == sha
            # the agent stopped: its jobs were released, so nothing stays pinned
            assert cache.usage().jobs == {}

    asyncio.run(scenario())


def test_a_corrupt_object_in_the_store_refuses_the_job_naming_it(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    s, manifest = store
    libc = next(e for e in manifest if e.path.endswith("/libc.so.6"))
    sha = libc.sha256
    assert sha is not None
    damaged = s.path(sha)
    damaged.chmod(0o644)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.master.expect(wire.Hello)
            await c.master.send(c.prepare(3))
            refused = await c.master.expect(wire.Prepared)
            assert (refused.job, refused.accepted) == (3, False)
            assert refused.reason is not None
            assert sha in refused.reason and libc.path in refused.reason
            with NodeCache(c.opts.cache_dir, BUDGET) as cache:
                assert "3" not in cache.usage().jobs  # the failed fill left no pins
                assert not (c.opts.cache_dir / "objects" / sha[:2] / sha).exists()

    asyncio.run(scenario())


def test_a_malformed_manifest_is_refused(tmp_path: Path, store: tuple[Store, Manifest]) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.master.expect(wire.Hello)
            doc = c.manifest.document()
            doc["entries"][-1]["path"] = "/../etc/shadow"
            await c.master.send(wire.Prepare(4, doc, [], OBJECTS_TOKEN))
            refused = await c.master.expect(wire.Prepared)
            assert not refused.accepted and refused.reason and "/../etc/shadow" in refused.reason

    asyncio.run(scenario())


@needs_sandbox
def test_exec_streams_output_and_the_exit_status(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.registered_and_prepared(5)
            await c.master.send(c.exec(5, "echo hi; echo oops >&2; exit 3"))
            out, exited = await c.master.run_task(5, 0)
            assert sorted(out.splitlines()) == [b"hi", b"oops"]
            assert (exited.status, exited.signal) == (3, None)
            assert set(exited.rusage) >= {"utime", "stime", "maxrss"}
            # a program the root does not hold: 127 and the reason on stderr
            missing = wire.Exec(5, [{**c.exec(5, "").tasks[0], "task": 1, "argv": ["/no/such"]}])
            await c.master.send(missing)
            out, exited = await c.master.run_task(5, 1)
            assert exited.status == 127 and b"/no/such" in out
            # 400 KB of output: every byte arrives, in messages of at most 64 KiB
            line = "x" * 99
            script = f"i=0; while [ $i -lt 4000 ]; do echo {line}; i=$((i+1)); done"
            await c.master.send(wire.Exec(5, [{**c.exec(5, script).tasks[0], "task": 2}]))
            sizes: list[int] = []
            async with asyncio.timeout(WAIT_S):
                while True:
                    message = await c.master.received.get()
                    if isinstance(message, wire.Output):
                        sizes.append(len(message.payload()))
                    elif isinstance(message, wire.Exited):
                        break
            assert sum(sizes) == 400_000 and max(sizes) <= 64 * 1024

    asyncio.run(scenario())


@needs_sandbox
def test_exec_of_an_unprepared_job_fails_the_task(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.master.expect(wire.Hello)
            await c.master.send(c.exec(6, "exit 0"))
            out, exited = await c.master.run_task(6, 0)
            assert exited.status == 126 and b"not prepared" in out

    asyncio.run(scenario())


@needs_sandbox
def test_exits_while_the_master_is_away_are_held_and_reported_on_reconnect(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.registered_and_prepared(7)
            script = "echo started; while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 4"
            await c.master.send(c.exec(7, script))
            started = await c.master.expect(wire.Output)
            assert started.payload() == b"started\n"

            await c.away_until_exited(7)

            c.master.accepting = True
            hello = await c.master.expect(wire.Hello)
            assert c.master.hellos == 2
            held = [wire.decode(json.dumps(d), wire.NODE_TO_MASTER) for d in hello.held]
            assert [(m.job, m.task, m.status) for m in held if isinstance(m, wire.Exited)] == [
                (7, 0, 4)
            ]
            await until(lambda: load_held(c.opts.state_file) == [])

    asyncio.run(scenario())


@needs_sandbox
def test_output_while_the_master_is_away_reaches_it_before_the_exit(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.registered_and_prepared(8)
            script = (
                "echo started; while [ ! -e /tmp/go ]; do sleep 0.05; done; "
                "echo during; echo oops >&2; exit 4"
            )
            await c.master.send(c.exec(8, script))
            assert (await c.master.expect(wire.Output)).payload() == b"started\n"

            await c.away_until_exited(8)

            c.master.accepting = True
            hello = await c.master.expect(wire.Hello)
            assert hello.held == []  # the exit comes after the output, not in the hello
            out, exited = await c.master.run_task(8, 0)
            assert sorted(out.splitlines()) == [b"during", b"oops"]
            assert (exited.status, exited.signal) == (4, None)
            await until(lambda: load_held(c.opts.state_file) == [])

    asyncio.run(scenario())


@needs_sandbox
def test_a_stopping_agent_reports_the_exits_of_the_tasks_it_kills(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.registered_and_prepared(13)
            await c.master.send(c.exec(13, "echo up; sleep 60"))
            await c.master.expect(wire.Output)
            assert c.agent is not None
            c.agent.cancel()  # what SIGTERM does in beonode run
            exited = await c.master.expect(wire.Exited)
            assert (exited.job, exited.status) == (13, 137)
            await asyncio.wait([c.agent])
            assert load_held(c.opts.state_file) == []  # sent, not held
            assert list(c.opts.roots_dir.iterdir()) == []

    asyncio.run(scenario())


@needs_sandbox
def test_release_kills_the_tasks_and_removes_the_root(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store, keep_roots=0) as c:
            await c.registered_and_prepared(8)
            await c.master.send(c.exec(8, "sleep 60 & sleep 60; exit 0"))
            beat = await c.master.expect(wire.Heartbeat, lambda b: len(b.procs) >= 2)
            pids = [p["pid"] for p in beat.procs if p["job"] == 8]
            assert {p["cmd"].split()[0] for p in beat.procs} >= {"sleep"}
            root = c.opts.roots_dir / "u0" / "8"
            assert mounts_under(root)

            await c.master.send(wire.Release(8))
            _, exited = await c.master.run_task(8, 0)
            assert exited.status == 137 and exited.signal == 9
            tmp = c.opts.roots_dir / "u0" / "8.tmp"
            await until(lambda: not root.exists() and not tmp.exists())
            assert not any(alive(pid) for pid in pids)
            assert mounts_under(root) == []
            with NodeCache(c.opts.cache_dir, BUDGET) as cache:
                await until(lambda: "8" not in cache.usage().jobs)

    asyncio.run(scenario())


@needs_sandbox
def test_a_released_root_is_kept_for_the_next_job_with_the_same_manifest(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store, keep_roots=1) as c:
            await c.registered_and_prepared(8)
            await c.master.send(c.exec(8, "exit 0"))
            assert (await c.master.run_task(8, 0))[1].status == 0
            root = c.opts.roots_dir / "u0" / "8"
            await c.master.send(wire.Release(8))
            with NodeCache(c.opts.cache_dir, BUDGET) as cache:
                # the job's pin goes, the kept root's pin holds the same objects
                await until(lambda: "8" not in cache.usage().jobs)
                kept = cache.usage().jobs["root:8"]
                # the root's: the manifest's and the node's own /etc files (nodefiles.py)
                own = [p for p in DEFAULT_NODE_FILES if os.path.isfile(p) and not os.path.islink(p)]
                assert kept.objects == len(c.manifest.objects()) + len(own)
            await until(lambda: not (c.opts.roots_dir / "u0" / "8.tmp").exists())
            assert mounts_under(root)

            # job 9, same manifest: runs in root 8, no new root is built
            await c.master.send(c.prepare(9))
            assert (await c.master.expect(wire.Prepared)).accepted
            await c.master.send(c.exec(9, "echo again"))
            out, exited = await c.master.run_task(9, 0)
            assert (out, exited.status) == (b"again\n", 0)
            assert not (c.opts.roots_dir / "u0" / "9").exists()
            with NodeCache(c.opts.cache_dir, BUDGET) as cache:
                assert "root:8" not in cache.usage().jobs  # in use by job 9 now

            # job 10, another manifest, while 9 holds root 8: a root of its own;
            # parked after job 9's, it makes the pool (keep 1) drop root 8
            marker = Entry("/beolaunch-test", "dir", 0o755)
            doc = build(c.manifest.root, [*c.manifest, marker], c.manifest.owner).document()
            await c.master.send(
                wire.Prepare(10, doc, [{"url": c.objects_url, "kind": "master"}], OBJECTS_TOKEN)
            )
            assert (await c.master.expect(wire.Prepared)).accepted
            await c.master.send(c.exec(10, "test -d /beolaunch-test"))
            assert (await c.master.run_task(10, 0))[1].status == 0
            assert mounts_under(c.opts.roots_dir / "u0" / "10")
            await c.master.send(wire.Release(9))
            with NodeCache(c.opts.cache_dir, BUDGET) as cache:
                await until(lambda: "root:8" in cache.usage().jobs)
            await c.master.send(wire.Release(10))
            await until(lambda: not root.exists())
            assert mounts_under(c.opts.roots_dir / "u0" / "10")
            assert c.agent is not None
            c.agent.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await c.agent
            # a stopping agent removes the roots it kept, and their pins
            assert mounts_under(c.opts.roots_dir) == []
            with NodeCache(c.opts.cache_dir, BUDGET) as cache:
                assert not [h for h in cache.usage().jobs if h.startswith("root:")]

    asyncio.run(scenario())


@needs_sandbox
def test_signal_reaches_every_task(tmp_path: Path, store: tuple[Store, Manifest]) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.registered_and_prepared(9)
            tasks = [c.exec(9, "echo up; sleep 60", task=t).tasks[0] for t in (0, 1)]
            await c.master.send(wire.Exec(9, tasks))
            for _ in tasks:
                await c.master.expect(wire.Output)
            await c.master.send(wire.Signal(9, 15))
            exits = [await c.master.expect(wire.Exited) for _ in tasks]
            assert sorted((e.task, e.status, e.signal) for e in exits) == [
                (0, 143, 15),
                (1, 143, 15),
            ]

    asyncio.run(scenario())


async def start_beonode(c: Cluster, token_file: Path, log: Path) -> asyncio.subprocess.Process:
    opts = c.opts
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", "from launcher.cli.beonode import main; raise SystemExit(main())"),
        *("run", "--master", opts.master_url, "--name", "node7", "--token-file", str(token_file)),
        *("--cache", str(opts.cache_dir), "--roots", str(opts.roots_dir)),
        *("--state-file", str(opts.state_file), "--heartbeat", "0.2"),
        stdin=asyncio.subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


@needs_sandbox
def test_beonode_run_stops_cleanly_on_sigterm_and_reports_held_exits_after_a_restart(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(NODE_TOKEN + "\n")
    log_file = tmp_path / "beonode.log"

    async def scenario() -> None:
        async with cluster(tmp_path, store, agent=False) as c:
            agent = await start_beonode(c, token_file, log_file)
            try:
                await c.master.expect(wire.Hello, lambda h: h.name == "node7")
                await c.master.send(c.prepare(10))
                assert (await c.master.expect(wire.Prepared)).accepted
                await c.master.send(c.exec(10, "echo up; sleep 60"))
                assert (await c.master.expect(wire.Output)).payload() == b"up\n"
                beat = await c.master.expect(wire.Heartbeat, lambda b: len(b.procs) >= 2)
                c.master.accepting = False
                assert c.master.ws is not None
                await c.master.ws.close()
                agent.send_signal(signal.SIGTERM)
                async with asyncio.timeout(WAIT_S):
                    assert await agent.wait() == 0
            finally:
                if agent.returncode is None:
                    agent.kill()
                    await agent.wait()
            log = log_file.read_text()
            assert "registered with the master" in log and "stopping" in log
            assert not any(alive(p["pid"]) for p in beat.procs)
            assert list(c.opts.roots_dir.iterdir()) == []
            assert [(d["job"], d["status"]) for d in load_held(c.opts.state_file)] == [(10, 137)]

            c.master.accepting = True
            again = await start_beonode(c, token_file, log_file)
            try:
                hello = await c.master.expect(wire.Hello, lambda h: bool(h.held))
                assert [(d["job"], d["task"], d["status"]) for d in hello.held] == [(10, 0, 137)]
            finally:
                again.send_signal(signal.SIGTERM)
                async with asyncio.timeout(WAIT_S):
                    assert await again.wait() == 0

    asyncio.run(scenario())


@needs_sandbox
def test_a_restarted_agent_removes_what_a_killed_one_left(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(NODE_TOKEN)
    log_file = tmp_path / "beonode.log"

    async def scenario() -> None:
        async with cluster(tmp_path, store, agent=False) as c:
            agent = await start_beonode(c, token_file, log_file)
            try:
                await c.registered_and_prepared(11)
                await c.master.send(c.exec(11, "echo up; sleep 60"))
                beat = await c.master.expect(wire.Heartbeat, lambda b: len(b.procs) >= 2)
            finally:
                agent.kill()  # no cleanup: the task and its root stay behind
                await agent.wait()
            pids = [p["pid"] for p in beat.procs]
            assert all(alive(pid) for pid in pids)
            again = await start_beonode(c, token_file, log_file)
            try:
                await c.master.expect(wire.Hello)
                assert not any(alive(pid) for pid in pids)
                assert list(c.opts.roots_dir.iterdir()) == []
                assert mounts_under(c.opts.roots_dir) == []
            finally:
                again.send_signal(signal.SIGTERM)
                async with asyncio.timeout(WAIT_S):
                    assert await again.wait() == 0

    asyncio.run(scenario())


def test_a_manifest_over_aiohttps_default_message_limit_is_prepared(
    tmp_path: Path, store: tuple[Store, Manifest]
) -> None:
    _, manifest = store
    target = "/usr/lib/" + "x" * 240  # long targets: fewer entries to validate
    links = [Entry(f"/many/l{i:05d}", "symlink", 0o777, target=target) for i in range(16_000)]
    big = build(manifest.root, [*manifest, Entry("/many", "dir", 0o755), *links])

    async def scenario() -> None:
        async with cluster(tmp_path, store) as c:
            await c.master.expect(wire.Hello)
            message = wire.Prepare(12, big.document(), c.prepare(12).sources, OBJECTS_TOKEN)
            assert len(wire.encode(message)) > 4 << 20
            await c.master.send(message)
            prepared = await c.master.expect(wire.Prepared)
            assert (prepared.job, prepared.accepted) == (12, True)

    asyncio.run(scenario())
