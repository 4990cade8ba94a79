"""``beoctl master serve``: every master service in one asyncio process.

Opens the state database and the store, then listens on the configured
``objects`` (cachefs.service), ``control`` (node WebSockets), ``logs`` (UDP
syslog) and ``status`` (read-only: the status page and ``/metrics``,
launcher.master.statusservice) addresses and on the user socket
``STATE/run/master.sock``; with a
``[boot]`` table also runs the boot HTTP service (iPXE scripts, boot images,
enrollment) on ``[boot] master_address`` at the ``boot_http`` port, TFTP
(``tftp``), dnsmasq and router advertisements (launcher.master.bootservices); writes
``STATE/run/master.pid``; on SIGTERM or SIGINT closes every socket and removes
the pid file and the user socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import Engine

from bootsvc.settings import BootSettings
from cachefs import httpguard
from cachefs.atomicfile import write_atomic
from cachefs.httpguard import quiet_accept_errors
from cachefs.service import make_app, serve_app
from cachefs.store import Store
from launcher.config import Config
from launcher.errors import ConfigError
from launcher.limits import fit_connections, raise_open_files
from launcher.master import nfsserver
from launcher.master.admission import SlurmAdmission
from launcher.master.batch import BatchOutput
from launcher.master.boothttp import BootHttp, BootHttpSettings
from launcher.master.bootservices import BootServices
from launcher.master.capability import CapabilityAuthorizer
from launcher.master.dbwork import DbWork
from launcher.master.jobs import JobRun
from launcher.master.late import LateFiles
from launcher.master.links import NodeLink
from launcher.master.logs import SyslogProtocol
from launcher.master.metrics import Metrics, Scrapes, metrics_routes, state_counts
from launcher.master.nodes import CONTROL_CONNECTIONS, NodeRegistry, control_app
from launcher.master.paths import pid_path, run_dir, socket_path
from launcher.master.preparation import Preparation
from launcher.master.requeue import release_held_forever
from launcher.master.scheduler import Scheduler
from launcher.master.statusservice import start_status
from launcher.master.unixroot import UnixRoot, master_host
from launcher.master.unreported import Unreported
from launcher.master.users import UserApi
from launcher.slurm.adapter import SlurmCli
from launcher.slurm.paths import SlurmPaths
from launcher.state.db import protect_sqlite
from launcher.state.migrate import open_engine

log = logging.getLogger(__name__)

#: Mode of STATE/run: anyone may reach the socket in it, only root may add files.
RUN_DIR_MODE = 0o755
#: umask while the user socket is bound, so it is born mode 0666 (never chmod-ed later).
SOCKET_UMASK = 0o111

__all__ = ["pid_path", "run_dir", "serve", "socket_path"]  # paths: kept importable from here


def slurm_of(config: Config) -> Callable[[], SlurmCli | None]:
    """Whether this master runs with Slurm, asked again at each use: the
    Slurm commands when the virtual cluster's ``STATE/slurm/slurm.conf``
    exists (``cluster up --slurm`` writes it after the master started), or
    when the config has a ``[slurm]`` table (a real cluster: the commands'
    own slurm.conf); None otherwise."""
    paths = SlurmPaths.of_state(config.state_dir)
    table = "slurm" in config.given

    def current() -> SlurmCli | None:
        if paths.conf.exists():
            return SlurmCli(env=paths.env(), jobcomp=paths.jobcomp)
        # a real cluster: only once the commands can find a slurm.conf of their own
        found = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
        return SlurmCli() if table and os.path.exists(found) else None

    return current


def read_secret(config: Config) -> str:
    try:
        secret = config.secret_file.read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            config.secret_file, None, f"cannot read the cluster secret: {exc.strerror}"
        ) from exc
    if not secret:
        raise ConfigError(config.secret_file, None, "the cluster secret is empty; run beoctl init")
    return secret


def _unspecified(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified


def _pid_alive(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid if pid != os.getpid() else None


async def serve(
    config: Config,
    *,
    ready: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the master until SIGTERM/SIGINT (or ``stop`` is set).

    Every part started is entered into one AsyncExitStack: at the end, or when a
    later part fails to start, the stack stops them in reverse order (sockets
    closed, pid file and user socket removed, database released).

    Raises ConfigError for an unreadable secret or config, StateError for a
    database at the wrong schema, ClusterProcessError-like ConfigError when
    another master already holds the pid file, OSError when a port is taken.
    """
    control_cap = fit_connections(CONTROL_CONNECTIONS, raise_open_files())
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)
    stop = stop or asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        await _start(stack, config, control_cap)
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
                stack.callback(loop.remove_signal_handler, signum)
        if ready is not None:
            ready()
        await stop.wait()


async def _start(stack: contextlib.AsyncExitStack, config: Config, control_cap: int) -> None:
    """Start every part of the master, each entered into ``stack`` once started;
    the control service holds at most ``control_cap`` node connections."""
    engine = open_engine(config.database_url)
    stack.callback(engine.dispose)
    metrics = Metrics()  # this master's own registry (metrics.py)
    db = DbWork(engine, timing=metrics.db_timed)  # database work off the event loop (dbwork.py)
    stack.push_async_callback(db.close)  # before the engine is disposed
    for path in protect_sqlite(engine):  # an older install's: users read it through us now
        log.warning("the state database %s was readable by others: now mode 0600", path)
    store = Store(config.store_dir)
    secret = read_secret(config)
    jobs = config.jobs
    boot = config.boot
    envroot = config.envroot
    rdir = run_dir(config)
    rdir.mkdir(mode=RUN_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(rdir, RUN_DIR_MODE)  # a directory, not the socket: mkdir's mode is umask-ed
    other = _pid_alive(pid_path(config))
    if other is not None:
        raise ConfigError(
            pid_path(config), None, f"a master is already running (pid {other}); stop it first"
        )
    stack.callback(_remove_run_files, config)  # last out: after every socket is closed

    objects = config.service("objects")
    # Nodes get per-job capabilities for one manifest's objects, never the secret.
    capabilities = CapabilityAuthorizer(secret, store)
    objects_app = make_app(store, capabilities, on_sent=capabilities.sent)  # egress per job
    objects_runner = await serve_app(objects_app, objects.address, objects.port)
    stack.push_async_callback(objects_runner.cleanup)
    objects_port = int(objects_runner.addresses[0][1])

    def sources(link: NodeLink) -> list[dict[str, str]]:
        host = link.local_address if _unspecified(objects.address) else objects.address
        host = f"[{host}]" if ":" in host else host
        return [{"url": f"http://{host}:{objects_port}", "kind": "master"}]

    links: dict[str, NodeLink] = {}  # the connected nodes: the registry fills it
    preparation = Preparation(
        engine,
        store,
        links,
        sources=sources,
        capabilities=capabilities,
        fanout=config.peers.fanout,
        envroot=envroot,
        on_fill=metrics.filled,
    )
    late = LateFiles(db, store, links, capabilities, envroot)
    stack.callback(late.close)
    slurm = slurm_of(config)
    admission = SlurmAdmission(preparation, db, slurm=slurm, on_end=late.job_ended)

    def gate(run: JobRun) -> Awaitable[str | None] | None:
        # batch jobs open their output files before they start; BatchOutput
        # watches the scheduler's jobs, so it is made after it
        return batch.gate(run)

    scheduler = Scheduler(
        preparation,
        db,
        node_timeout_s=jobs.node_timeout_s,
        gate=gate,
        admission=admission.on_message,
        late=late.on_message,
        on_end=late.job_ended,
        on_launch=metrics.launched,
    )
    batch = BatchOutput(db, scheduler)
    stack.push_async_callback(batch.close)
    registry = NodeRegistry(
        db,
        scheduler=scheduler,
        links=links,
        message_rate=jobs.node_message_rate,
        on_up=metrics.node_up,
    )
    registry.reset()
    scheduler.recover()
    await batch.resume()  # before serving: the jobs it watches are in memory

    control = config.service("control")
    control_runner = await _runner(stack, control_app(registry))
    stack.push_async_callback(registry.close_all)  # sessions end before their listener
    await httpguard.LimitedTCPSite(
        control_runner, control.address, control.port, limit=control_cap, backlog=1024
    ).start()  # a rebooted rack reconnects at once: 128 pending accepts overflow

    logs = config.service("logs")
    syslog = SyslogProtocol(db)
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: syslog, local_addr=(logs.address, logs.port)
    )
    stack.callback(udp.close)
    _background(stack, syslog.flush_forever())  # cancelled before the socket closes

    if boot is not None:
        await _serve_boot_http(stack, config, boot, engine, registry, metrics)
        boot_services = BootServices(config, boot, engine, config.service("boot_http").port)
        await boot_services.start()  # stops what it started when it fails
        stack.push_async_callback(boot_services.stop)
    else:
        log.info("boot HTTP service off: the config has no [boot] table")

    scrapes = Scrapes(metrics, lambda: db.read(state_counts), lambda: len(links))
    _feed, status_login = await start_status(
        stack,
        config.service("status"),
        secret,
        db,
        registry,
        scheduler,
        routes=[metrics_routes(scrapes)],  # /metrics: no login (counts only)
    )

    users = UserApi(
        db,
        store,
        scheduler,
        registry,
        allow_root=jobs.allow_root,
        batch=batch,
        user_quota_bytes=jobs.user_quota_bytes,
        unixroot=UnixRoot(engine, store, envroot, master_host(config, boot)),
        bytes_served=capabilities.sent_for,
        status_login=status_login,
    )
    user_runner = await _runner(stack, users.app())
    sock = socket_path(config)
    sock.unlink(missing_ok=True)  # a stale socket of a master that died
    old_umask = os.umask(SOCKET_UMASK)
    try:
        await httpguard.LimitedUnixSite(user_runner, str(sock)).start()
    finally:
        os.umask(old_umask)

    settings = config.slurm
    unreported = Unreported(engine, grace_s=settings.unreported_grace)
    _background(stack, late.sweep_forever())
    _background(
        stack, release_held_forever(engine, slurm, settings.release_held, unreported=unreported)
    )
    _background(stack, scheduler.watch_silence())
    _background(stack, registry.flush_forever())
    _write_pid(pid_path(config))


async def _runner(stack: contextlib.AsyncExitStack, app: web.Application) -> web.AppRunner:
    """A set-up runner for ``app``, cleaned up by ``stack`` (its sites with it)."""
    runner = httpguard.runner(app, shutdown_timeout=1.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    return runner


def _background(stack: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` as a task until ``stack`` cancels it."""
    task = asyncio.create_task(work)

    async def cancel() -> None:
        task.cancel()
        await asyncio.wait([task])

    stack.push_async_callback(cancel)


def _remove_run_files(config: Config) -> None:
    """The user socket, and the pid file when it is this process's."""
    socket_path(config).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        if _read_pid(pid_path(config)) == os.getpid():
            pid_path(config).unlink()


async def _serve_boot_http(
    stack: contextlib.AsyncExitStack,
    config: Config,
    boot: BootSettings,
    engine: Engine,
    registry: NodeRegistry,
    metrics: Metrics,
) -> None:
    """The boot HTTP service on ``[boot] master_address`` (the cluster interface, never
    every interface: its scripts and enroll are for the booting nodes only), at
    ``[services.boot_http] port``; a node is connected while it has a control session."""
    service = config.service("boot_http")
    address = str(boot.master_address)
    if service.address != address:
        log.warning(
            "boot HTTP service on %s (the [boot] master_address), not on %s: "
            "[services.boot_http] sets only its port",
            address,
            service.address,
        )
    settings = BootHttpSettings.of(config, boot, service.port)
    boot_http = BootHttp(
        engine,
        settings,
        connected=lambda name: name in registry.links,
        on_boot=metrics.boot_started,
    )
    runner = await _runner(stack, boot_http.app())
    await httpguard.LimitedTCPSite(runner, address, service.port).start()
    log.info("boot HTTP service on %s:%d", address, service.port)
    mounts = ", ".join(f"{m.source} at {m.target}" for m in settings.mounts) or "nothing"
    log.info("booted nodes mount %s", mounts)
    said = await asyncio.to_thread(nfs_unserved, config)
    if said:
        log.warning("%s", said)


def nfs_unserved(config: Config) -> str | None:
    """What is wrong with the master's NFS service, which booted nodes mount by
    default: not running, or serving another ``[nfs]`` than the config's. None: fine."""
    if config.nfs is None:
        return None
    state = nfsserver.status(config)
    if not state.running:
        return (
            "[nfs] is in the config but no NFS server runs: booted nodes stay drained "
            "('mount ... failed') until `beoctl nfs apply` serves it"
        )
    if state.pending:
        return "[nfs] changed since the NFS server was started: run `beoctl nfs apply`"
    return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _write_pid(path: Path) -> None:
    if _read_pid(path) == os.getpid():
        return  # written by whoever started us (beoctl cluster up adds our argv): keep it
    write_atomic(path, f"{os.getpid()}\n")
