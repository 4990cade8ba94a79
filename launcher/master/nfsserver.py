"""The master's NFS server: serve ``[nfs]`` (apply), say what is served (status), stop.

Two servers behind one interface: nfs-ganesha (:mod:`launcher.master.ganesha`,
userspace, the one used where the kernel has no nfsd) and the kernel's nfsd
(:mod:`launcher.master.nfskernel`). What was last applied is recorded in
``STATE/nfs/applied.json``, so ``status`` reports what is served (not what the
config now says) and ``stop`` stops the server that was started, even after
``[nfs]`` was edited or removed. Library code: nothing here prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cachefs.atomicfile import write_atomic
from launcher.config import Config
from launcher.errors import NfsServerError
from launcher.master import ganesha, nfskernel
from launcher.master.nfstext import export_ids, ganesha_config, kernel_exports, split_ganesha_config
from launcher.nfsconfig import NfsSettings

Action = Literal["started", "reloaded", "restarted", "unchanged", "exported"]
APPLIED = "applied.json"


@dataclass(frozen=True)
class Served:
    """What ``beoctl nfs apply`` last served (``STATE/nfs/applied.json``)."""

    server: str
    address: str
    port: int
    clients: str
    exports: tuple[str, ...]
    export_ids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, server: str, settings: NfsSettings, ids: dict[str, int]) -> Served:
        return cls(
            server,
            str(settings.address),
            settings.port,
            str(settings.clients),
            settings.exports,
            ids,
        )

    def same_service(self, other: Served) -> bool:
        """Whether ``other`` serves the same thing (Export_Ids aside)."""
        return (self.server, self.address, self.port, self.clients, self.exports) == (
            other.server,
            other.address,
            other.port,
            other.clients,
            other.exports,
        )


@dataclass(frozen=True)
class ApplyResult:
    served: Served
    action: Action
    pid: int | None


@dataclass(frozen=True)
class NfsStatus:
    """``running``: the server process lives (ganesha) or nfsd has threads (kernel);
    ``listening``: the port answers (ganesha; None for the kernel, whose address and
    port are nfsd's own); ``pending``: ``[nfs]`` differs from what is served."""

    served: Served | None
    running: bool
    pid: int | None
    listening: bool | None
    pending: bool


def nfs_dir(config: Config) -> Path:
    return config.state_dir / "nfs"


def resolve_server(settings: NfsSettings) -> str:
    """``auto``: the kernel's nfsd where this kernel has it, else ganesha."""
    if settings.server != "auto":
        return settings.server
    return "kernel" if nfskernel.usable() else "ganesha"


def check_exports(settings: NfsSettings, state_dir: Path) -> None:
    """Each export exists, is a directory, is no symlink and has none on its way,
    and neither holds nor lies in the state dir. Raises NfsServerError naming it."""
    state = Path(os.path.realpath(state_dir))
    for path in settings.exports:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise NfsServerError(
                "does not exist: create it or remove it from [nfs] exports", path
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise NfsServerError(
                f"is a symlink (to {os.readlink(path)}): export the directory itself", path
            )
        if not stat.S_ISDIR(st.st_mode):
            raise NfsServerError("is not a directory: export a directory", path)
        real = Path(os.path.realpath(path))
        if str(real) != path:
            raise NfsServerError(
                f"has a symlink on its way (it is {real}): export the real path", path
            )
        if real == state or real.is_relative_to(state) or state.is_relative_to(real):
            raise NfsServerError(
                f"holds or is inside the state dir {state_dir}: export another directory", path
            )


def apply(config: Config) -> ApplyResult:
    """Serve ``config.nfs``: write the server's config and start it, or have the
    running one reload (restart when its address or port changed).

    Raises NfsServerError: no ``[nfs]`` table, a bad export, or a server that
    will not start (with its own complaint)."""
    settings = config.nfs
    if settings is None:
        raise NfsServerError(
            f"{config.path} has no [nfs] table: add one (docs/nfs.md) to serve "
            "directories to the nodes"
        )
    check_exports(settings, config.state_dir)
    directory = nfs_dir(config)
    directory.mkdir(mode=0o700, exist_ok=True)
    with _locked(directory):
        return _apply(settings, directory)


def _apply(settings: NfsSettings, directory: Path) -> ApplyResult:
    previous = load_served(directory)
    server = resolve_server(settings)
    if previous is not None and previous.server != server:
        _stop(directory, previous.server)
    if server == "kernel":
        nfskernel.apply(kernel_exports(settings))
        served = Served.of(server, settings, {})
        _save(directory, served)
        return ApplyResult(served, "exported", None)
    ids = export_ids(settings.exports, previous.export_ids if previous else {})
    served = Served.of(server, settings, ids)
    files = ganesha.GaneshaFiles(directory)
    text = ganesha_config(settings, ids, directory)
    try:
        old = files.config.read_text()
    except FileNotFoundError:
        old = ""
    write_atomic(files.config, text, mode=0o600)
    pid = ganesha.running_pid(files)
    action: Action
    if pid is None:
        pid, action = ganesha.start(files, served.address, served.port), "started"
    elif old == text:
        action = "unchanged"
    elif split_ganesha_config(old)[0] != split_ganesha_config(text)[0]:
        ganesha.stop(files)
        pid, action = ganesha.start(files, served.address, served.port), "restarted"
    else:
        ganesha.reload(files, pid)
        action = "reloaded"
    _save(directory, served)
    return ApplyResult(served, action, pid)


def status(config: Config) -> NfsStatus:
    """What is served now (never raises for a server that is down)."""
    directory = nfs_dir(config)
    served = load_served(directory)
    pending = config.nfs is not None and (
        served is None
        or not served.same_service(
            Served.of(resolve_server(config.nfs), config.nfs, served.export_ids)
        )
    )
    if served is not None and served.server == "kernel":
        return NfsStatus(served, nfskernel.running(), None, None, pending)
    pid = ganesha.running_pid(ganesha.GaneshaFiles(directory))
    listening = (
        ganesha.answers(served.address, served.port)
        if served is not None and pid is not None
        else False
    )
    return NfsStatus(served, pid is not None, pid, listening, pending)


def stop(config: Config) -> tuple[Served | None, int | None]:
    """Stop serving what was applied: ganesha stopped, or the kernel's exports
    removed. Returns what was served and ganesha's pid (None: none ran)."""
    directory = nfs_dir(config)
    if not directory.is_dir():
        return None, None
    with _locked(directory):
        served = load_served(directory)
        pid = _stop(directory, served.server if served is not None else "ganesha")
        with contextlib.suppress(FileNotFoundError):
            (directory / APPLIED).unlink()
    return served, pid


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One apply or stop at a time (two starts at once would race for the port)."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _stop(directory: Path, server: str) -> int | None:
    if server == "kernel":
        nfskernel.remove()
        return None
    return ganesha.stop(ganesha.GaneshaFiles(directory))


def load_served(directory: Path) -> Served | None:
    """The record of the last apply; None when there is none (or it is unreadable,
    as after a crash mid-write of an older version: the next apply rewrites it)."""
    try:
        doc: dict[str, Any] = json.loads((directory / APPLIED).read_text())
        return Served(
            str(doc["server"]),
            str(doc["address"]),
            int(doc["port"]),
            str(doc["clients"]),
            tuple(str(p) for p in doc["exports"]),
            {str(k): int(v) for k, v in doc.get("export_ids", {}).items()},
        )
    except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _save(directory: Path, served: Served) -> None:
    doc = asdict(served)
    doc["exports"] = list(served.exports)
    write_atomic(directory / APPLIED, json.dumps(doc, indent=1) + "\n", mode=0o600)
