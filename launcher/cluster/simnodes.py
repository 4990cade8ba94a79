"""Many simulated node agents in one asyncio process, against a real master.

``python -m launcher.cluster.simnodes --config CONFIG -n N [--prefix sim]``
registers nodes PREFIX0..PREFIX(N-1) in the state database (as ``beoctl node
add`` and ``beoctl node token`` do: a node that exists already keeps its row
and gets a new token), then opens one control WebSocket per node to the
master's control service, each a :class:`~launcher.cluster.simagent.SimAgent`
with its own token. It prints ``ready N`` on stdout once every node has sent
its hello, and runs until SIGTERM or SIGINT. With ``--record FILE`` it writes,
on the way out, when each node sent each heartbeat (JSON: ``{"beats": {name:
[unix seconds, ...]}}``), for measuring when the master recorded them
(``bench/scale.py``).

Used to see what hundreds or thousands of nodes do to the master on one
machine (issue 15); the master does not know they are simulated.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from sqlalchemy import Engine, select

from launcher import config as cfg
from launcher.cluster.simagent import SimAgent
from launcher.errors import BeolaunchError
from launcher.limits import raise_open_files
from launcher.master.tokens import issue_token
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import Node
from launcher.state.nodes import add_node

log = logging.getLogger(__name__)

#: WebSocket handshakes under way at once: the master checks each token against
#: every node's digest, so a thousand at once only queue up inside it.
CONNECTING = 64


def node_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def register(engine: Engine, names: Sequence[str]) -> dict[str, str]:
    """Add the nodes of ``names`` that do not exist yet and issue each a new token;
    name -> token. Raises StateError for a name that is not a hostname label."""
    with transaction(engine) as session:
        known = {n.name: n for n in session.scalars(select(Node).where(Node.name.in_(names)))}
        return {
            name: issue_token(session, known.get(name) or add_node(session, name)) for name in names
        }


def control_url(config: cfg.Config) -> str:
    """The control service's URL as seen from this machine (loopback when it
    listens on every address)."""
    control = config.service("control")
    host = control.address
    if ipaddress.ip_address(host).is_unspecified:
        host = "127.0.0.1" if ipaddress.ip_address(host).version == 4 else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{control.port}/node"


async def serve(
    agents: Sequence[SimAgent], on_ready: asyncio.Event, *, connecting: int = CONNECTING
) -> None:
    """Run ``agents`` until cancelled; ``on_ready`` is set once every one has said hello."""
    gate = asyncio.Semaphore(connecting)
    # One session, no per-host connection limit: each agent holds its own socket.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(a.run(session, gate)) for a in agents]
        try:
            await asyncio.gather(*(a.registered.wait() for a in agents))
            on_ready.set()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def write_record(path: Path, agents: Sequence[SimAgent]) -> None:
    """When each agent sent each heartbeat, as JSON (see the module doc)."""
    doc = {"beats": {a.name: a.beats for a in agents}}
    path.write_text(json.dumps(doc))


async def _main(args: argparse.Namespace) -> None:
    config = cfg.load(args.config)
    engine = open_engine(config.database_url)
    try:
        tokens = register(engine, node_names(args.prefix, args.n))
    finally:
        engine.dispose()
    url = control_url(config)
    agents = [
        SimAgent(url, name, token, i, args.heartbeat_s)
        for i, (name, token) in enumerate(tokens.items())
    ]
    ready = asyncio.Event()
    me = asyncio.current_task()
    assert me is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, me.cancel)

    async def announce() -> None:
        await ready.wait()
        print(f"ready {len(agents)}", flush=True)

    announcer = asyncio.create_task(announce())
    try:
        await serve(agents, ready)
    except asyncio.CancelledError:
        pass
    finally:
        announcer.cancel()
        if args.record is not None:
            write_record(args.record, agents)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m launcher.cluster.simnodes",
        description="Simulated node agents against a real master (see the module doc).",
    )
    parser.add_argument("--config", required=True, help="the master's config.toml")
    parser.add_argument("-n", type=int, required=True, help="how many nodes")
    parser.add_argument("--prefix", default="sim", help="node names: PREFIX0, PREFIX1...")
    parser.add_argument("--heartbeat-s", type=float, default=5.0, help="seconds between beats")
    parser.add_argument("--record", type=Path, help="write heartbeat send times here on exit")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"-n {args.n}: give at least 1 node")
    if not args.heartbeat_s > 0:
        parser.error(f"--heartbeat-s {args.heartbeat_s}: give a positive number of seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="simnodes: %(message)s")
    raise_open_files()
    try:
        asyncio.run(_main(args))
    except BeolaunchError as exc:
        print(f"simnodes: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
