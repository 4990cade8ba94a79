"""``beoctl master serve``: every master service in one asyncio process.

Opens the state database and the store, then listens on the configured
``objects`` (cachefs.service), ``control`` (node WebSockets), ``logs`` (UDP
syslog), ``boot_http`` (iPXE scripts, boot images, enrollment) addresses and on
the user socket ``STATE/run/master.sock``; with a ``[boot]`` table also runs
TFTP (``tftp``), dnsmasq and router advertisements (launcher.master.bootservices); writes
``STATE/run/master.pid``; on SIGTERM or SIGINT closes every socket and removes
the pid file and the user socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import tomllib
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from bootsvc import settings as boot_settings
from cachefs import httpguard
from cachefs.httpguard import quiet_accept_errors
from cachefs.service import make_app, secret_token_check, serve_app
from cachefs.store import Store
from launcher.config import Config
from launcher.errors import ConfigError
from launcher.limits import raise_open_files
from launcher.master.admission import SlurmAdmission
from launcher.master.batch import BatchOutput
from launcher.master.boothttp import BootHttp, BootHttpSettings
from launcher.master.bootservices import BootServices
from launcher.master.links import NodeLink
from launcher.master.logs import SyslogProtocol
from launcher.master.nodes import NodeRegistry, control_app
from launcher.master.paths import pid_path, run_dir, socket_path
from launcher.master.requeue import release_held_forever
from launcher.master.scheduler import Scheduler
from launcher.master.users import UserApi
from launcher.slurm import settings as slurm_settings
from launcher.slurm.adapter import SlurmCli
from launcher.slurm.paths import SlurmPaths
from launcher.state.migrate import open_engine

#: Mode of STATE/run: anyone may reach the socket in it, only root may add files.
RUN_DIR_MODE = 0o755
#: umask while the user socket is bound, so it is born mode 0666 (never chmod-ed later).
SOCKET_UMASK = 0o111

__all__ = ["pid_path", "run_dir", "serve", "socket_path"]  # paths: kept importable from here


def allow_root_jobs(config: Config) -> bool:
    """``[jobs] allow_root`` from the config file; absent means false."""
    try:
        data = tomllib.loads(config.path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(config.path, None, f"cannot read: {exc}") from exc
    jobs = data.get("jobs", {})
    value = jobs.get("allow_root", False) if isinstance(jobs, dict) else False
    if not isinstance(value, bool):
        raise ConfigError(config.path, "jobs.allow_root", f"expected true or false, got {value!r}")
    return value


def slurm_of(config: Config) -> Callable[[], SlurmCli | None]:
    """Whether this master runs with Slurm, asked again at each use: the
    Slurm commands when the virtual cluster's ``STATE/slurm/slurm.conf``
    exists (``cluster up --slurm`` writes it after the master started), or
    when the config has a ``[slurm]`` table (a real cluster: the commands'
    own slurm.conf); None otherwise."""
    paths = SlurmPaths.of_state(config.state_dir)
    try:
        data = tomllib.loads(config.path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(config.path, None, f"cannot read: {exc}") from exc
    table = isinstance(data.get("slurm"), dict)

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
    store = Store(config.store_dir)
    secret = read_secret(config)
    allow_root = allow_root_jobs(config)
    boot = boot_settings.load(config.path)
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
    boot_services: BootServices | None = None
    try:
        objects = config.service("objects")
        objects_runner = await serve_app(
            make_app(store, secret_token_check(secret)), objects.address, objects.port
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
            token=secret,
            fanout=config.peers.fanout,
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
            token=secret,
            slurm=slurm,
            fanout=config.peers.fanout,
        )
        scheduler.admission = admission.on_message
        release_limit = slurm_settings.load(config.path).release_held
        requeue = asyncio.create_task(release_held_forever(engine, slurm, release_limit))
        registry.reset()
        scheduler.recover()
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

        boot_http = config.service("boot_http")
        boot_app = BootHttp(engine, BootHttpSettings.of(config, boot, boot_http.port)).app()
        boot_runner = httpguard.runner(boot_app, shutdown_timeout=1.0)
        await boot_runner.setup()
        runners.append(boot_runner)
        await httpguard.LimitedTCPSite(boot_runner, boot_http.address, boot_http.port).start()
        if boot is not None:
            boot_services = BootServices(config, boot, engine, boot_http.port)
            await boot_services.start()

        users = UserApi(engine, store, scheduler, registry, allow_root=allow_root, batch=batch)
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
        if requeue is not None:
            requeue.cancel()
            await asyncio.wait([requeue])
        if udp is not None:
            udp.close()
        if boot_services is not None:
            await boot_services.stop()
        await registry.close_all()
        if batch is not None:
            await batch.close()
        for runner in reversed(runners):
            await runner.cleanup()
        socket_path(config).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if _read_pid(pid_path(config)) == os.getpid():
                pid_path(config).unlink()
        engine.dispose()


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
