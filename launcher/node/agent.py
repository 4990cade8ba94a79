"""The node agent: one WebSocket to the master's control service, kept open.

It registers (``hello``: name, hardware report, cache usage, results held while
the master was away), sends a ``heartbeat`` every few seconds, and hands each
``prepare``/``exec``/``signal``/``release`` to :class:`~launcher.node.jobs.Jobs`.

When the master goes away the jobs keep running. Their output meanwhile is
held in memory (bounded) and their exits persisted in the state file (so an
agent restart keeps those too); both go to the master when it is back, output
first (:mod:`launcher.node.outbox`). The agent reconnects with
exponential backoff (``backoff_min_s`` doubling up to ``backoff_max_s``).

Cancel :func:`run_agent` to stop it: every task is killed, every environment
root removed and every pin dropped before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from cachefs.cache import NodeCache
from cachefs.httpguard import quiet_accept_errors
from launcher import wire
from launcher.limits import raise_open_files
from launcher.node.hardware import hardware_report
from launcher.node.heartbeat import cache_document, heartbeat
from launcher.node.jobs import Jobs
from launcher.node.local import serve_local
from launcher.node.outbox import Outbox
from launcher.node.peers import PeerTokens, serve_peers
from launcher.node.roots.userdirs import prepare_roots_dir
from launcher.node.slurmjobs import SlurmJobs

log = logging.getLogger(__name__)

#: The master closes with this code when it does not know the node's token.
CLOSE_UNKNOWN_TOKEN = 4401
#: Largest message taken from the master (aiohttp's default is 4 MiB).
MAX_MESSAGE = 256 << 20


@dataclass(frozen=True)
class AgentOptions:
    master_url: str  # ws://host:port/node
    name: str
    token: str
    cache_dir: Path
    roots_dir: Path
    cache_budget: int  # bytes
    state_file: Path
    heartbeat_s: float = 5.0
    #: environment roots kept for later jobs with the same manifest (roots/pool.py)
    keep_roots: int = 4
    backoff_min_s: float = 0.5
    backoff_max_s: float = 10.0
    #: aiohttp's WebSocket ping interval: a master that stops answering is
    #: noticed within about twice this, even without a TCP reset.
    ping_s: float = 15.0
    #: serve the cache to peers on this port (peers.py); None: do not
    peer_port: int | None = None
    peer_address: str = "0.0.0.0"
    #: the local Unix socket for the Slurm prolog/epilog and steps (local.py); None: none
    local_socket: Path | None = None
    #: what keeps this node out of scheduling, asked before each hello and
    #: heartbeat (a booted node's site mounts: launcher.node.sitemounts); None: nothing
    health: Callable[[], tuple[str, ...]] | None = None
    #: mount points of the node's site filesystems, bound into every job root
    #: as the master's ``[envroot] binds`` are
    site_binds: tuple[str, ...] = ()


async def run_agent(opts: AgentOptions) -> None:
    """Serve the master at ``opts.master_url`` until cancelled (see module doc).

    Raises AgentStateError when the state file cannot be read, and the cache's
    errors when the cache directory cannot be opened; a master that cannot be
    reached, or refuses the token, is retried forever (and logged).
    """
    raise_open_files()
    quiet_accept_errors(asyncio.get_running_loop())
    outbox = Outbox(opts.state_file)
    with NodeCache(opts.cache_dir, opts.cache_budget) as cache:
        tokens = PeerTokens()  # the job capabilities peers may present
        jobs = Jobs(
            cache,
            opts.roots_dir,
            outbox,
            keep_roots=opts.keep_roots,
            tokens=tokens,
            site_binds=opts.site_binds,
        )
        await asyncio.to_thread(jobs.clean_leftovers)
        prepare_roots_dir(opts.roots_dir)
        peers = None
        if opts.peer_port is not None:
            peers = await serve_peers(cache, tokens, opts.peer_address, opts.peer_port)
            # port 0 picks a free one: the hello tells the master which
            opts = replace(opts, peer_port=int(peers.addresses[0][1]))
        slurm = SlurmJobs(jobs, outbox)
        local = None
        if opts.local_socket is not None:
            local = await serve_local(opts.local_socket, slurm)
        try:
            async with aiohttp.ClientSession() as session:
                await _connect_forever(opts, session, cache, jobs, outbox, slurm)
        finally:
            if local is not None:
                local.close()
                if opts.local_socket is not None:
                    opts.local_socket.unlink(missing_ok=True)
            if peers is not None:
                await peers.cleanup()
            log.info("stopping: killing tasks, removing environment roots")
            await asyncio.shield(jobs.shutdown())


async def _connect_forever(
    opts: AgentOptions,
    session: aiohttp.ClientSession,
    cache: NodeCache,
    jobs: Jobs,
    outbox: Outbox,
    slurm: SlurmJobs,
) -> None:
    delay = opts.backoff_min_s
    headers = {"Authorization": f"Bearer {opts.token}"}
    while True:
        try:
            ws = await session.ws_connect(
                opts.master_url,
                headers=headers,
                heartbeat=opts.ping_s,
                autoping=True,
                # a prepare carries the whole manifest: a big Python closure is MBs
                max_msg_size=MAX_MESSAGE,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning(
                "cannot reach the master at %s (%s); retrying in %.1f s",
                opts.master_url,
                str(exc) or type(exc).__name__,
                delay,
            )
        else:
            try:
                registered = await _serve(opts, ws, cache, jobs, outbox, slurm)
            except asyncio.CancelledError:
                # stopping: end the jobs while the socket is open, so the master
                # hears their exits now rather than from the next agent's hello
                await asyncio.shield(jobs.shutdown())
                raise
            finally:
                outbox.detach()
                await ws.close()
            if ws.close_code == CLOSE_UNKNOWN_TOKEN:
                log.error(
                    "the master refused this node's token (close %d): issue one on the "
                    "master (beoctl node token %s) and put it in the token file; "
                    "retrying in %.1f s",
                    CLOSE_UNKNOWN_TOKEN,
                    opts.name,
                    delay,
                )
            else:
                if registered:
                    delay = opts.backoff_min_s
                log.warning(
                    "lost the master (close code %s); reconnecting in %.1f s", ws.close_code, delay
                )
        await asyncio.sleep(delay)
        delay = min(delay * 2, opts.backoff_max_s)


async def _serve(
    opts: AgentOptions,
    ws: aiohttp.ClientWebSocketResponse,
    cache: NodeCache,
    jobs: Jobs,
    outbox: Outbox,
    slurm: SlurmJobs,
) -> bool:
    """Register on ``ws`` and serve it until it closes; return whether the hello went out."""

    said = Said(_problems(opts))

    def hello(held: list[dict[str, Any]]) -> wire.Hello:
        said.problems = _problems(opts)
        return wire.Hello(
            opts.name,
            hardware_report(),
            cache_document(cache.usage()),
            held,
            peer_port=opts.peer_port,
            jobs=jobs.held_ids(),
            problems=list(said.problems),
        )

    try:
        await outbox.attach(ws, hello)
    except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
        log.warning("the master went away during hello: %s", exc)
        return False
    log.info("registered with the master at %s as %s", opts.master_url, opts.name)
    beat = asyncio.create_task(_heartbeats(opts, cache, jobs, outbox, said))
    try:
        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                try:
                    message = wire.decode(frame.data, wire.MASTER_TO_NODE)
                except wire.WireError as exc:
                    log.warning("ignored a message from the master: %s", exc)
                    await outbox.send(wire.Error(str(exc)))
                    continue
                if isinstance(message, wire.Admission):
                    slurm.on_admission(message)
                else:
                    jobs.handle(message)
            elif frame.type == aiohttp.WSMsgType.BINARY:
                await outbox.send(wire.Error("binary frames are not part of the protocol"))
            else:  # ERROR, CLOSE...: the loop ends on its own
                log.debug("control socket frame %s", frame.type)
    finally:
        beat.cancel()
        # asyncio.wait, not `await beat` under suppress(CancelledError): that
        # would also swallow a cancellation of this task (SIGTERM) arriving now
        await asyncio.wait([beat])
    return True


@dataclass
class Said:
    """The problems the master was last told of on this connection."""

    problems: tuple[str, ...]


def _problems(opts: AgentOptions) -> tuple[str, ...]:
    return opts.health() if opts.health is not None else ()


async def _heartbeats(
    opts: AgentOptions, cache: NodeCache, jobs: Jobs, outbox: Outbox, said: Said
) -> None:
    """A heartbeat every ``heartbeat_s``, and a ``health`` message before it when the
    node's problems changed (a site mount failed or came back) since last said."""
    while True:
        await asyncio.sleep(opts.heartbeat_s)
        now = _problems(opts)
        if now != said.problems:
            log.info("telling the master: %s", "; ".join(now) if now else "no problems left")
            await outbox.send(wire.Health(list(now)))
            said.problems = now
        await outbox.send(heartbeat(cache.usage(), jobs.procs()))


def serve_until_signalled(opts: AgentOptions) -> None:
    """Run the agent until SIGTERM or SIGINT (``beonode run``, a booted node's stage 3).

    The first signal cancels it (tasks killed, roots removed, pins dropped);
    a second one does not cut that cleanup short.
    """
    import signal

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        stopping = False

        def stop() -> None:
            nonlocal stopping
            if not stopping:
                stopping = True
                me.cancel()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop)
        try:
            await run_agent(opts)
        except asyncio.CancelledError:
            log.info("stopped")

    asyncio.run(serve())
