"""What the boot service tests share: a real master process with its own state dir."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy import Engine, select

from launcher import config as cfg
from launcher.cli.beoctl import main as beoctl
from launcher.isolation import local_services
from launcher.state import migrate
from launcher.state.db import make_engine, transaction
from launcher.state.migrate import open_engine
from launcher.state.models import Node
from launcher.state.nodes import get_node
from tests.integration.vcluster import Poll

ROOT = Path(__file__).resolve().parents[2]
poll = Poll(seconds=20)


@dataclass
class Master:
    config: cfg.Config
    proc: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.config.service('boot_http').port}{path}"

    def engine(self) -> Engine:
        return open_engine(self.config.database_url)

    def beoctl(self, *argv: str) -> int:
        return beoctl(["--config", str(self.config.path), *argv])


def start_master(
    initialized: Path,
    top: Path,
    boot: dict[str, Any] | None,
    prefix: Sequence[str] = (),
    database_url: str | None = None,
    tftp_port: int | None = None,
) -> Master:
    """A master on a copy of the state dir ``initialized`` under ``top``, its stderr
    (logging at INFO) in ``top/master.log``. Services on 127.0.0.1 at free ports; with
    ``boot`` (the ``[boot]`` table) all but ``objects`` on its master_address instead,
    so nodes on the boot network reach them. ``prefix`` runs it in a namespace."""
    state = top / "state"
    shutil.copytree(initialized, state)
    if database_url is not None:
        engine = make_engine(database_url)
        migrate.upgrade(engine)
        engine.dispose()
    doc = cfg.render(cfg.load(str(initialized / cfg.CONFIG_NAME)))
    doc["state"] = {
        "dir": str(state),
        "database": database_url or cfg.default_database_url(state),
        "secret_file": str(state / "secret"),
    }
    doc["services"] = local_services()
    if boot is not None:
        doc["boot"] = boot
        for name in ("control", "logs", "boot_http", "tftp"):
            doc["services"][name]["address"] = boot["master_address"]
    if tftp_port is not None:
        doc["services"]["tftp"]["port"] = tftp_port
    (state / cfg.CONFIG_NAME).write_text(tomli_w.dumps(doc))
    config = cfg.load(str(state / cfg.CONFIG_NAME))
    code = (
        "import asyncio, logging, sys\n"
        "from launcher.config import load\n"
        "from launcher.master.daemon import serve\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
        "asyncio.run(serve(load(sys.argv[1])))\n"
    )
    log = top / "master.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", code, str(config.path)], cwd=ROOT, stderr=out
        )
    pid_file = state / "run" / "master.pid"
    poll(
        "the master's pid file",
        lambda: (
            (pid_file.exists() and pid_file.read_text().strip() == str(proc.pid))
            or proc.poll() is not None
        ),
    )
    assert proc.poll() is None, f"the master exited at start: {log.read_text()}"
    return Master(config, proc, log)


def stop_master(m: Master) -> None:
    if m.proc.poll() is None:
        m.proc.send_signal(signal.SIGTERM)
        try:
            m.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait()
            raise AssertionError("the master did not stop on SIGTERM") from None


def node_of(m: Master, *, name: str | None = None, mac: str | None = None) -> Node | None:
    """The node named ``name`` (NotFoundError if none), or the one with ``mac`` (or None)."""
    engine = m.engine()
    try:
        with transaction(engine, readonly=True) as session:
            if name is not None:
                return get_node(session, name)
            return session.scalars(select(Node).where(Node.mac == mac)).first()
    finally:
        engine.dispose()
