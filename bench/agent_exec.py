"""What the node agent adds to starting a task.

A real agent (in this process) connected to a minimal master (a WebSocket
server on 127.0.0.1 speaking the wire messages), the job prepared from the
real object service (the closure of /bin/true). Figure: median time from
sending ``exec`` of ``/bin/true`` to receiving its ``exited``, on a job whose
environment root exists (each node pays the root build once per job; it is
reported too). Baseline, same run: the same program started and reaped
directly with asyncio (no namespace, no chroot, no messages). Goal: under
50 ms per exec, a sixth of the 0.3 s launch budget of ``beosub -N 4``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from bench.record import report
from cachefs.closure import resolve
from cachefs.service import base_url, secret_token_check, serve
from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher import wire
from launcher.node.agent import AgentOptions, run_agent

REPEAT = 30
TOKEN = "bench-node"
SECRET = "bench-objects"


class Master:
    def __init__(self) -> None:
        self.received: asyncio.Queue[wire.Message] = asyncio.Queue()
        self.ws: web.WebSocketResponse | None = None

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        async for frame in ws:
            self.received.put_nowait(wire.decode(frame.data, wire.NODE_TO_MASTER))
        return ws

    async def expect(self, cls: type[wire.Message]) -> wire.Message:
        while True:
            message = await self.received.get()
            if isinstance(message, cls):
                return message

    async def send(self, message: wire.Message) -> None:
        assert self.ws is not None
        await self.ws.send_str(wire.encode(message))


def task(number: int) -> dict[str, object]:
    return {
        "task": number,
        "argv": ["/bin/true"],
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": "/",
        "uid": 65534,
        "gid": 65534,
        "groups": [],
        "home": None,
    }


async def measure(top: Path) -> tuple[float, float, float]:
    store = Store(top / "store")
    closure = resolve("/bin/true", env={"PATH": "/usr/bin:/bin"})
    manifest = snapshot(closure.root, closure.paths, store)
    master = Master()
    app = web.Application()
    app.router.add_get("/node", master.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    objects = await serve(store, secret_token_check(SECRET))
    host, port = runner.addresses[0][:2]
    opts = AgentOptions(
        f"ws://{host}:{port}/node",
        "bench",
        TOKEN,
        top / "cache",
        top / "roots",
        1 << 30,
        top / "state.json",
        heartbeat_s=60.0,
    )
    agent = asyncio.create_task(run_agent(opts))
    try:
        await master.expect(wire.Hello)
        sources = [{"url": base_url(objects), "kind": "master"}]
        await master.send(wire.Prepare(1, manifest.document(), sources, SECRET))
        await master.expect(wire.Prepared)
        t0 = time.perf_counter()
        await master.send(wire.Exec(1, [task(0)]))
        first = await master.expect(wire.Exited)
        cold = time.perf_counter() - t0
        assert isinstance(first, wire.Exited) and first.status == 0, first
        warm = []
        for i in range(1, REPEAT + 1):
            t0 = time.perf_counter()
            await master.send(wire.Exec(1, [task(i)]))
            exited = await master.expect(wire.Exited)
            warm.append(time.perf_counter() - t0)
            assert isinstance(exited, wire.Exited) and exited.status == 0, exited
        direct = []
        for _ in range(REPEAT):
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec("/bin/true")
            await proc.wait()
            direct.append(time.perf_counter() - t0)
        await master.send(wire.Release(1))
        return statistics.median(warm), statistics.median(direct), cold
    finally:
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        await objects.cleanup()
        await runner.cleanup()


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench.agent_exec: needs root (tasks run in a mount namespace, chrooted)")
    top = Path(tempfile.mkdtemp(prefix="beolaunch-bench-agent-"))
    try:
        warm, direct, cold = asyncio.run(measure(top))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print(f"agent_exec: first exec of the job (root build included): {cold * 1000:.1f} ms")
    report(
        "agent_exec",
        warm * 1000,
        direct * 1000,
        "ms",
        "exec -> exited of /bin/true through the agent under 50 ms",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
