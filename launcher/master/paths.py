"""Where the master's run files are: its user socket and pid file under ``STATE/run``.

Apart from :mod:`launcher.master.daemon` so the console scripts that only dial
the socket (``beosub``, ``beostat``, ``beoctl kill``) do not import the whole
master (aiohttp's server, SQLAlchemy, the scheduler): about 0.5 s of every launch.
"""

from __future__ import annotations

from pathlib import Path

from launcher.config import Config


def run_dir(config: Config) -> Path:
    return config.state_dir / "run"


def socket_path(config: Config) -> Path:
    return run_dir(config) / "master.sock"


def pid_path(config: Config) -> Path:
    return run_dir(config) / "master.pid"
