"""A real master process for the tests that attack its sockets (fuzzing, partial
requests, descriptor exhaustion): a fresh state dir, services on free loopback
ports, its stdout and stderr in a log file the test reads."""

from __future__ import annotations

import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from cachefs.manifest import Entry, build
from cachefs.store import Store
from launcher import config as cfg
from launcher.initialize import initialize
from launcher.isolation import local_services
from launcher.master import capability

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0
_CODE = (
    "import asyncio, logging, sys\n"
    "from launcher.config import load\n"
    "from launcher.master.daemon import serve\n"
    "logging.basicConfig(level=logging.INFO)\n"
    "asyncio.run(serve(load(sys.argv[1])))\n"
)


#: The boot HTTP service alone, as the master runs it with [boot] (quiet accept
#: errors and the httpguard limits included), for a master without [boot]: a
#: [boot] table would need a cluster interface for DHCP and TFTP.
_BOOT_CODE = (
    "import asyncio, logging, sys\n"
    "from cachefs import httpguard\n"
    "from launcher.config import load\n"
    "from launcher.master.boothttp import BootHttp, BootHttpSettings\n"
    "from launcher.state.migrate import open_engine\n"
    "logging.basicConfig(level=logging.INFO)\n"
    "config = load(sys.argv[1])\n"
    "service = config.service('boot_http')\n"
    "async def main():\n"
    "    control = config.service('control')\n"
    "    settings = BootHttpSettings(\n"
    "        state_dir=config.state_dir, http=('127.0.0.1', service.port),\n"
    "        logs_port=config.service('logs').port, control=(control.address, control.port),\n"
    "        peer_port=config.peers.port, master_address='127.0.0.1')\n"
    "    app = BootHttp(open_engine(config.database_url), settings).app()\n"
    "    runner = httpguard.runner(app, shutdown_timeout=1.0)\n"
    "    await runner.setup()\n"
    "    await httpguard.LimitedTCPSite(runner, '127.0.0.1', service.port).start()\n"
    "    print('boot service ready', flush=True)\n"
    "    await asyncio.Event().wait()\n"
    "asyncio.run(main())\n"
)


@contextmanager
def running_boot_service(m: Master) -> Iterator[None]:
    """The boot HTTP service of ``m``'s config in a process of its own, logging to
    ``m.log``, on ``[services.boot_http]``'s port of 127.0.0.1."""
    with m.log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT_CODE, str(m.config.path)],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + WAIT_S
    try:
        while "boot service ready" not in m.log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, m.log.read_text()
            time.sleep(0.05)
        yield
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Master:
    config: cfg.Config
    proc: subprocess.Popen[bytes]
    log: Path
    secret: str
    digest: str  # an object in the store
    #: a job capability granting ``digest`` (what a node presents; the secret opens nothing)
    capability: str
    _seen: int = 0

    @property
    def sock(self) -> Path:
        return self.config.state_dir / "run" / "master.sock"

    def unix(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(self.sock))
        return s

    def tcp(self, service: str) -> Callable[[], socket.socket]:
        port = self.config.service(service).port
        return lambda: socket.create_connection(("127.0.0.1", port))

    def new_log(self) -> str:
        """What the master logged since the last call."""
        text = self.log.read_text(errors="replace")
        new, self._seen = text[self._seen :], len(text)
        return new


@contextmanager
def running_master(
    *, nofile: int | None = None, jobs: dict[str, Any] | None = None
) -> Iterator[Master]:
    """A master until the block ends; with ``nofile``, RLIMIT_NOFILE (soft and hard);
    ``jobs``: its config's ``[jobs]`` table."""
    top = Path(tempfile.mkdtemp(prefix="beolaunch-attacked-"))
    top.chmod(0o755)  # not under pytest's 0700 tmp: other users reach the socket
    state = top / "state"
    initialize(state)
    doc = cfg.render(cfg.load(str(state / cfg.CONFIG_NAME)))
    doc["services"] = local_services()
    if jobs is not None:
        doc["jobs"] = jobs
    (state / cfg.CONFIG_NAME).write_text(tomli_w.dumps(doc))
    config = cfg.load(str(state / cfg.CONFIG_NAME))
    store = Store(config.store_dir)
    digest, size = store.ingest_bytes(b"an object\n" * 100)
    manifest = build("/obj", [Entry("/obj", "file", 0o644, size, digest)], owner=0)
    manifest_id, _ = store.ingest_bytes(manifest.canonical())
    secret = config.secret_file.read_text().strip()
    cap = capability.issue(secret, 1, manifest_id)
    log = top / "master.log"

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CODE, str(config.path)],
            cwd=ROOT,
            stdout=out,
            stderr=out,
            preexec_fn=limit,
        )
    pid_file = state / "run" / "master.pid"
    deadline = time.monotonic() + WAIT_S
    try:
        while not (pid_file.exists() and pid_file.read_text().strip() == str(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Master(config, proc, log, secret, digest, cap)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(top)
