"""``beoctl master serve``: every master service in one asyncio process.

Opens the state database and the store, then listens on the configured
``objects`` (cachefs.service), ``control`` (node WebSockets) and ``logs`` (UDP
syslog) addresses and on the user socket ``STATE/run/master.sock``; with a
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
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from sqlalchemy import Engine

from bootsvc.settings import BootSettings
from cachefs import httpguard
from cachefs.httpguard import quiet_accept_errors
from cachefs.service import make_app, serve_app
from cachefs.store import Store
from launcher.config import Config
from launcher.errors import ConfigError
from launcher.limits import raise_open_files
from launcher.master.admission import SlurmAdmission
from launcher.master.batch import BatchOutput
from launcher.master.boothttp import BootHttp, BootHttpSettings
from launcher.master.bootservices import BootServices
from launcher.master.capability import CapabilityAuthorizer
from launcher.master.late import LateFiles
from launcher.master.links import NodeLink
from launcher.master.logs import SyslogProtocol
from launcher.master.nodes import NodeRegistry, control_app
from launcher.master.paths import pid_path, run_dir, socket_path
from launcher.master.requeue import release_held_forever
from launcher.master.scheduler import Scheduler
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

    Raises ConfigError for an unreadable secret or config, StateError for a
    database at the wrong schema, ClusterProcessError-like ConfigError when
    another master already holds the pid file, OSError when a port is taken.
    """
    raise_open_files()
    quiet_accept_errors(asyncio.get_running_loop())
    engine = open_engine(config.database_url)
    for path in protect_sqlite(engine):  # an older install's: users read it through us now
        log.warning("the state database %s was readable by others: now mode 0600", path)
    store = Store(config.store_dir)
    secret = read_secret(config)
    jobs = config.jobs
    allow_root = jobs.allow_root
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
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    runners: list[web.AppRunner] = []
    udp: asyncio.DatagramTransport | None = None
    registry = NodeRegistry(engine)
    batch: BatchOutput | None = None
    requeue: asyncio.Task[None] | None = None
    silence: asyncio.Task[None] | None = None
    boot_services: BootServices | None = None
    late: LateFiles | None = None
    sweeper: asyncio.Task[None] | None = None
    try:
        objects = config.service("objects")
        # Nodes get per-job capabilities for one manifest's objects, never the secret.
        capabilities = CapabilityAuthorizer(secret, store)
        objects_runner = await serve_app(
            make_app(store, capabilities), objects.address, objects.port
        )
        runners.append(objects_runner)
        objects_port = int(objects_runner.addresses[0][1])

        def sources(link: NodeLink) -> list[dict[str, str]]:
            host = link.local_address if _unspecified(objects.address) else objects.address
            host = f"[{host}]" if ":" in host else host
            return [{"url": f"http://{host}:{objects_port}", "kind": "master"}]

        scheduler = Scheduler(
            engine,
            store,
            registry.links,
            sources=sources,
            capabilities=capabilities,
            fanout=config.peers.fanout,
            node_timeout_s=jobs.node_timeout_s,
            envroot=envroot,
        )
        batch = BatchOutput(engine, scheduler)
        scheduler.gate = batch.gate  # batch jobs open their output files before they start
        registry.scheduler = scheduler
        slurm = slurm_of(config)
        admission = SlurmAdmission(
            engine,
            store,
            registry.links,
            sources=sources,
            capabilities=capabilities,
            slurm=slurm,
            fanout=config.peers.fanout,
            envroot=envroot,
        )
        scheduler.admission = admission.on_message
        late = LateFiles(engine, store, registry.links, capabilities, envroot)
        scheduler.late = late.on_message
        scheduler.on_end = admission.on_end = late.job_ended
        sweeper = asyncio.create_task(late.sweep_forever())
        settings = config.slurm
        unreported = Unreported(engine, grace_s=settings.unreported_grace)
        requeue = asyncio.create_task(
            release_held_forever(engine, slurm, settings.release_held, unreported=unreported)
        )
        registry.reset()
        scheduler.recover()
        silence = asyncio.create_task(scheduler.watch_silence())
        batch.resume()

        control = config.service("control")
        control_runner = httpguard.runner(control_app(registry), shutdown_timeout=1.0)
        await control_runner.setup()
        runners.append(control_runner)
        await httpguard.LimitedTCPSite(control_runner, control.address, control.port).start()

        logs = config.service("logs")
        udp, _ = await loop.create_datagram_endpoint(
            lambda: SyslogProtocol(engine), local_addr=(logs.address, logs.port)
        )

        if boot is not None:
            runners.append(await _serve_boot_http(config, boot, engine, registry))
            boot_services = BootServices(config, boot, engine, config.service("boot_http").port)
            await boot_services.start()
        else:
            log.info("boot HTTP service off: the config has no [boot] table")

        users = UserApi(
            engine,
            store,
            scheduler,
            registry,
            allow_root=allow_root,
            batch=batch,
            user_quota_bytes=jobs.user_quota_bytes,
            unixroot=UnixRoot(engine, store, envroot, master_host(config, boot)),
        )
        user_runner = httpguard.runner(users.app(), shutdown_timeout=1.0)
        await user_runner.setup()
        runners.append(user_runner)
        sock = socket_path(config)
        sock.unlink(missing_ok=True)  # a stale socket of a master that died
        old_umask = os.umask(SOCKET_UMASK)
        try:
            await httpguard.LimitedUnixSite(user_runner, str(sock)).start()
        finally:
            os.umask(old_umask)

        _write_pid(pid_path(config))
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signum)
        for task in (requeue, silence, sweeper):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        if udp is not None:
            udp.close()
        if boot_services is not None:
            await boot_services.stop()
        await registry.close_all()
        if late is not None:
            late.close()
        if batch is not None:
            await batch.close()
        for runner in reversed(runners):
            await runner.cleanup()
        socket_path(config).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if _read_pid(pid_path(config)) == os.getpid():
                pid_path(config).unlink()
        engine.dispose()


async def _serve_boot_http(
    config: Config, boot: BootSettings, engine: Engine, registry: NodeRegistry
) -> web.AppRunner:
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
    boot_http = BootHttp(engine, settings, connected=lambda name: name in registry.links)
    runner = httpguard.runner(boot_http.app(), shutdown_timeout=1.0)
    await runner.setup()
    try:
        await httpguard.LimitedTCPSite(runner, address, service.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("boot HTTP service on %s:%d", address, service.port)
    return runner


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _write_pid(path: Path) -> None:
    if _read_pid(path) == os.getpid():
        return  # written by whoever started us (beoctl cluster up adds our argv): keep it
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)
