"""The master's share of launch latency: submit -> prepare -> exec -> done on 4 nodes.

Figure: median seconds from ``MasterClient.submit`` to the job's ``done`` on a
real master process (warm: the files are already in the store), with 4 node
agents that answer at once (WebSocket peers in this process: ``prepared`` on
``prepare``, ``exited 0`` on ``exec``), so only the master's work and its round
trips are timed. Baseline, same run: starting ``/bin/true`` 4 times one after
another with subprocess, the cost of a local sequential launch. The issue's
budget for a whole ``beosub -N 4 -- /bin/true`` is 0.3 s; the master should use
a small part of it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import tomli_w

from bench.record import report
from cachefs.snapshot import snapshot
from launcher import config as cfg
from launcher.initialize import initialize
from launcher.master.client import MasterClient
from launcher.master.tokens import issue_token
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.nodes import add_node
from launcher.wire import MASTER_TO_NODE, Exec, Exited, Hello, Prepare, Prepared, decode, encode

NODES = 4
ROUNDS = 30
ROOT = Path(__file__).resolve().parents[1]
START = (
    "import asyncio, sys\n"
    "from launcher.config import load\n"
    "from launcher.master.daemon import serve\n"
    "asyncio.run(serve(load(sys.argv[1])))\n"
)


def _free(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup(top: Path) -> tuple[cfg.Config, dict[str, str]]:
    config = initialize(top / "state").config
    doc = cfg.render(config)
    for name in cfg.SERVICES:
        kind = socket.SOCK_DGRAM if name in ("logs", "tftp") else socket.SOCK_STREAM
        doc["services"][name] = {"address": "127.0.0.1", "port": _free(kind)}
    doc["jobs"] = {"allow_root": True}
    config.path.write_text(tomli_w.dumps(doc))
    config = cfg.load(str(config.path))
    engine = open_engine(config.database_url)
    with transaction(engine) as session:
        tokens = {f"n{i}": issue_token(session, add_node(session, f"n{i}")) for i in range(NODES)}
    engine.dispose()
    return config, tokens


async def _agent(session: aiohttp.ClientSession, url: str, name: str, token: str) -> None:
    async with session.ws_connect(url, headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send_str(encode(Hello(name, {}, {})))
        async for msg in ws:
            message = decode(msg.data, MASTER_TO_NODE)
            if isinstance(message, Prepare):
                await ws.send_str(encode(Prepared(message.job, True, None, {})))
            elif isinstance(message, Exec):
                for task in message.tasks:
                    await ws.send_str(encode(Exited(message.job, task["task"], 0)))


async def _measure(config: cfg.Config, tokens: dict[str, str]) -> float:
    url = f"http://127.0.0.1:{config.service('control').port}/node"
    client = MasterClient(config.state_dir / "run" / "master.sock")
    manifest = snapshot("/usr/bin/true", ["/usr/bin/true"], None, owner=0).document()
    async with aiohttp.ClientSession() as session:
        agents = [asyncio.create_task(_agent(session, url, n, t)) for n, t in tokens.items()]
        while len([r for r in await client.nodes() if r["state"] == "up"]) < NODES:
            await asyncio.sleep(0.02)
        times = []
        for _ in range(ROUNDS + 1):  # the first round stores the file: not warm
            t0 = time.perf_counter()
            job = await client.submit(
                argv=["/usr/bin/true"],
                env={},
                cwd="/",
                nodes=NODES,
                tasks=NODES,
                manifest=manifest,
            )
            async for _message in client.stream(job):
                pass
            times.append(time.perf_counter() - t0)
        for agent in agents:
            agent.cancel()
    return statistics.median(times[1:])


def _baseline() -> float:
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(NODES):
            subprocess.run(["/bin/true"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench.master_dispatch: run as root (the master refuses other users' state)")
    with tempfile.TemporaryDirectory(prefix="beolaunch-bench-") as tmp:
        config, tokens = _setup(Path(tmp))
        proc = subprocess.Popen([sys.executable, "-c", START, str(config.path)], cwd=ROOT)
        try:
            pid_file = config.state_dir / "run" / "master.pid"
            while not pid_file.exists():
                if proc.poll() is not None:
                    sys.exit("bench.master_dispatch: the master did not start")
                time.sleep(0.02)
            figure = asyncio.run(_measure(config, tokens))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    baseline = _baseline()
    report(
        "master_dispatch_4_nodes",
        figure,
        baseline,
        "s",
        "master's share of beosub -N 4 well under the 0.3 s launch budget",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
