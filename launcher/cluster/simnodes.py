"""Many simulated node agents in one asyncio process, against a real master.

``python -m launcher.cluster.simnodes --config CONFIG -n N [--prefix sim]``
registers nodes PREFIX0..PREFIX(N-1) in the state database (as ``beoctl node
add`` and ``beoctl node token`` do: a node that exists already keeps its row
and gets a new token), then opens one control WebSocket per node to the
master's control service, each a :class:`~launcher.cluster.simagent.SimAgent`
with its own token. It prints ``ready N`` on stdout once every node has sent
its hello, and runs until SIGTERM or SIGINT (then fills under way get up to
60 s to end). With ``--record FILE`` it writes,
on the way out, when each node sent each heartbeat (JSON: ``{"beats": {name:
[unix seconds, ...]}}``), for measuring when the master recorded them
(``bench/scale.py``).

Fills (:mod:`launcher.cluster.simfill`): each node says it serves peers on a
fake port of its own (``--peer-port-base`` + its index; nothing listens there,
the nodes of this process find each other by it) unless the config's
``[peers] port`` is 0 (peer fills off: every node then fills from the master,
as real agents started by ``beoctl cluster up`` with that config would). The
master's bytes are fetched for real. ``--object-delay-s`` makes each object
take that long to arrive; ``--kill-parent`` kills one node that is a parent
(with a grandparent above it) in a job's peer tree once it holds some but not
all of the job's objects: its connection is dropped and never made again. The
record (``--record``) then also holds each node's fills (``fills``: name ->
[{job, sources, report or refused}]) and who was killed (``killed``, with the
children that were filling from it).

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import Engine, select

from launcher import config as cfg
from launcher.cluster.simagent import SimAgent
from launcher.cluster.simfill import SimPeers
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
#: Seconds the way out waits for fills under way, so the record holds how they ended.
FILLS_WAIT_S = 60.0
#: The first node's fake peer port (``--peer-port-base``); node i says base + i.
PEER_PORT_BASE = 20000


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
            await _fills_end(agents)  # while the session they fetch through is open


async def _fills_end(agents: Sequence[SimAgent]) -> None:
    """Wait (up to FILLS_WAIT_S) for the fills under way, so the record holds how they ended."""
    fills = [task for a in agents for task in a.running_fills]
    if not fills:
        return
    _, left = await asyncio.wait(fills, timeout=FILLS_WAIT_S)
    stuck = [a.name for a in agents if a.running_fills & left]
    if stuck:
        log.warning("fills not done after %g s: %s", FILLS_WAIT_S, ", ".join(stuck))


class ParentKiller:
    """Kills the first node seen, mid-fill, to be a parent with a grandparent above
    it (its children have somewhere to go but the master); once."""

    def __init__(self, peers: SimPeers) -> None:
        self.peers = peers
        self.killed: list[dict[str, Any]] = []

    def __call__(self, agent: SimAgent, _sha: str) -> None:
        if self.killed or not self.peers.sources.get(agent.name):
            return  # one kill; the root (no peer sources) is not the case wanted
        if not any(agent.peer.filling.values()):
            return  # holds every object already: not mid-fill
        children = self.peers.children(agent.peer)
        if not children:
            return
        log.warning("killing %s mid-fill: children %s", agent.name, ", ".join(children))
        self.killed.append({"name": agent.name, "children": children})
        agent.kill()


def write_record(path: Path, agents: Sequence[SimAgent], killed: list[dict[str, Any]]) -> None:
    """When each agent sent each heartbeat, its fills and who was killed, as JSON
    (see the module doc)."""
    doc = {
        "beats": {a.name: a.beats for a in agents},
        "fills": {a.name: [asdict(f) for f in a.fills] for a in agents},
        "killed": killed,
    }
    path.write_text(json.dumps(doc))


def peer_ports(config: cfg.Config, base: int, n: int) -> list[int | None]:
    """Each node's fake peer port: none when ``[peers] port`` is 0 (peer fills off).

    Raises BeolaunchError when base + n passes the last port."""
    if config.peers.port == 0:
        return [None] * n
    if base < 1 or base + n > 65536:
        raise BeolaunchError(
            f"--peer-port-base {base}: {n} nodes need ports {base}..{base + n - 1}, "
            "past 65535; give a lower base"
        )
    return [base + i for i in range(n)]


async def _main(args: argparse.Namespace) -> None:
    config = cfg.load(args.config)
    engine = open_engine(config.database_url)
    try:
        tokens = register(engine, node_names(args.prefix, args.n))
    finally:
        engine.dispose()
    url = control_url(config)
    peers = SimPeers()
    killer = ParentKiller(peers)
    ports = peer_ports(config, args.peer_port_base, args.n)
    agents = [
        SimAgent(
            url,
            name,
            token,
            i,
            args.heartbeat_s,
            peer_port=ports[i],
            peers=peers,
            object_delay_s=args.object_delay_s,
            on_installed=killer if args.kill_parent else None,
        )
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
            write_record(args.record, agents, killer.killed)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m launcher.cluster.simnodes",
        description="Simulated node agents against a real master (see the module doc).",
    )
    parser.add_argument("--config", required=True, help="the master's config.toml")
    parser.add_argument("-n", type=int, required=True, help="how many nodes")
    parser.add_argument("--prefix", default="sim", help="node names: PREFIX0, PREFIX1...")
    parser.add_argument("--heartbeat-s", type=float, default=5.0, help="seconds between beats")
    parser.add_argument(
        "--record", type=Path, help="write heartbeat send times and fills here on exit"
    )
    parser.add_argument(
        "--peer-port-base",
        type=int,
        default=PEER_PORT_BASE,
        help="node i says it serves peers on this + i (nothing listens)",
    )
    parser.add_argument(
        "--object-delay-s", type=float, default=0.0, help="simulated seconds per object filled"
    )
    parser.add_argument(
        "--kill-parent",
        action="store_true",
        help="kill one node that is a parent in a job's peer tree, mid-fill",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"-n {args.n}: give at least 1 node")
    if not args.heartbeat_s > 0:
        parser.error(f"--heartbeat-s {args.heartbeat_s}: give a positive number of seconds")
    if not args.object_delay_s >= 0:
        parser.error(f"--object-delay-s {args.object_delay_s}: give seconds >= 0")
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
