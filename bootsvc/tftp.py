"""The read-only, root-confined TFTP server that hands PXE clients the iPXE binary.

Built on tftpy, which does the protocol (RRQ, OACK with ``blksize`` and
``tsize``, retransmission). tftpy's own root check is ``abspath`` plus a prefix
test, which a symlink inside the root escapes, and it opens any file that
exists under its root itself. So tftpy is given an empty private directory as
its root (nothing is ever found there) and every read goes through its
``dyn_file_func`` hook to :func:`open_in_root`, which decides: the name is
resolved with ``realpath`` under the real root, refused when it leaves it, and
the file is opened once (no follow of a last-component symlink) and checked
again through ``/proc/self/fd`` against a component swapped in between.
Write requests are refused through tftpy's ``upload_open`` hook before any
file is touched.

tftpy catches only its own TftpException around a session's first packet
and later ones; a datagram whose file name or option is not ASCII, or whose
options do not unpack, raised UnicodeDecodeError or struct.error out of its
receive loop and stopped the server (one 20-byte datagram from anyone on the
cluster network; found by fuzzing). :class:`_GuardedSessions` turns any such
error into a TftpException, which ends that session only.

Each transfer ends with one ``logging`` line on ``bootsvc.tftp``: client
address, file, bytes, seconds, blksize, and whether the end of the file was
sent. Refused requests get one warning line each.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import tftpy

from bootsvc.errors import TftpPathRefusedError, TftpServiceError

log = logging.getLogger(__name__)

# Seconds to wait for the server thread to bind its socket.
_START_WAIT_S = 5.0


def resolve_in_root(root: Path, name: str) -> Path:
    """Return the real path of the TFTP name ``name`` under ``root``.

    Names are relative to the root; a leading ``/`` means the root (as
    tftpd-hpa's ``--secure``), except that a name already spelt with the
    root's own path is taken as it is. Symlinks are followed, and the result
    must still lie under the root's real path.

    Raises TftpPathRefusedError for an empty name, a NUL byte, or a name that
    resolves outside the root (``..``, an absolute path elsewhere, a symlink
    pointing out) or to the root itself.
    """
    real_root = Path(os.path.realpath(root))
    if not name or "\0" in name:
        raise TftpPathRefusedError(real_root, name, "empty name or NUL byte")
    candidate = Path(name)
    if not (candidate.is_absolute() and candidate.is_relative_to(real_root)):
        candidate = real_root / name.lstrip("/")
    resolved = Path(os.path.realpath(candidate))
    if resolved == real_root or not resolved.is_relative_to(real_root):
        raise TftpPathRefusedError(real_root, name, f"resolves to {resolved}, outside the root")
    return resolved


def open_in_root(root: Path, name: str) -> BinaryIO:
    """Open the regular file ``name`` under ``root`` for reading, once.

    Raises TftpPathRefusedError when :func:`resolve_in_root` refuses the name,
    when the file is missing, unreadable or not a regular file, or when the
    opened file is not under the root after all (a directory on the way was
    swapped for a symlink after the name was resolved).
    """
    path = resolve_in_root(root, name)
    real_root = Path(os.path.realpath(root))
    try:
        # O_NONBLOCK: opening a FIFO with no writer would block the server's
        # one thread for good (found by fuzzing); only regular files are served.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise TftpPathRefusedError(real_root, name, exc.strerror or str(exc)) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TftpPathRefusedError(real_root, name, "not a regular file")
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not opened.is_relative_to(real_root):
            raise TftpPathRefusedError(real_root, name, f"opened {opened}, outside the root")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _malformed_ends_session(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` with any error but tftpy's own re-raised as a TftpException."""

    def call(*args: Any) -> Any:
        try:
            return method(*args)
        except tftpy.TftpException:
            raise
        except Exception as exc:  # a malformed packet: UnicodeDecodeError, struct.error...
            raise tftpy.TftpException(f"malformed packet: {exc}") from exc

    return call


class _GuardedSessions(dict[str, Any]):
    """tftpy's table of sessions (``TftpServer.sessions``): each session put in it
    has its packet handlers (``start``, ``cycle``) wrapped so that a malformed
    packet ends the session, as tftpy does for the errors it knows."""

    def __setitem__(self, key: str, context: Any) -> None:
        context.start = _malformed_ends_session(context.start)
        context.cycle = _malformed_ends_session(context.cycle)
        super().__setitem__(key, context)


class _ServedFile:
    """A file being sent: counts what tftpy reads and logs the transfer on close.

    tftpy reads exactly one block per DAT packet, so the size of the first
    read is the negotiated blksize, and a short read means the last block.
    """

    def __init__(self, fileobj: BinaryIO, name: str, client: str) -> None:
        self._fileobj = fileobj
        self._name = name
        self._client = client
        self._started = time.monotonic()
        self._bytes = 0
        self._blksize = 0
        self._eof = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def closed(self) -> bool:
        return self._fileobj.closed

    def fileno(self) -> int:
        return self._fileobj.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fileobj.seek(offset, whence)

    def tell(self) -> int:
        return self._fileobj.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        if not self._blksize:
            self._blksize = size
        self._bytes += len(data)
        if size < 0 or len(data) < size:
            self._eof = True
        return data

    def close(self) -> None:
        if self._fileobj.closed:
            return
        self._fileobj.close()
        log.info(
            "tftp transfer client=%s file=%s bytes=%d seconds=%.3f blksize=%d %s",
            self._client,
            self._name,
            self._bytes,
            time.monotonic() - self._started,
            self._blksize,
            "complete" if self._eof else "incomplete",
        )


@dataclass(frozen=True)
class TftpSettings:
    """Where the TFTP server listens and what it serves.

    ``port`` 0 picks a free port (tests); ``timeout`` is tftpy's retransmit
    timeout in seconds, also how long :meth:`TftpService.stop` may take.
    """

    root: Path
    address: str
    port: int = 69
    timeout: float = 1.0
    retries: int = 3


class TftpService:
    """The TFTP server, run in a thread (:meth:`start`/:meth:`stop`) or in the
    calling thread of a process of its own (:meth:`serve_forever`)."""

    def __init__(self, settings: TftpSettings) -> None:
        self.settings = settings
        self._root = Path(os.path.realpath(settings.root))
        if not self._root.is_dir():
            raise TftpServiceError(
                settings.address, settings.port, f"root {settings.root} is not a directory"
            )
        self._empty: Path | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The UDP port bound (the chosen one when ``settings.port`` was 0)."""
        if self._server is None or self._server.listenport is None:
            raise TftpServiceError(self.settings.address, self.settings.port, "not started")
        return int(self._server.listenport)

    def _open(self, name: str, raddress: str = "?", rport: int = 0, **_: Any) -> _ServedFile | None:
        client = f"{raddress}:{rport}"
        try:
            fileobj = open_in_root(self._root, name)
        except TftpPathRefusedError as exc:
            # tftpy answers None with a "file not found" error packet: an
            # escape attempt learns nothing about what exists outside.
            log.warning("tftp refused client=%s file=%r: %s", client, name, exc.problem)
            return None
        return _ServedFile(fileobj, name, client)

    def _refuse_upload(self, path: str, context: Any) -> None:
        # ``path`` is under tftpy's empty root; the client's own name is more use.
        name = getattr(context, "file_to_transfer", None) or path
        client = f"{getattr(context, 'host', '?')}:{getattr(context, 'port', 0)}"
        log.warning("tftp refused client=%s write of %r: the server is read-only", client, name)
        return None

    def _make_server(self) -> Any:
        # tftpy opens files that exist under its own root without asking us:
        # give it an empty directory nobody writes to, so every read reaches
        # self._open and our check decides.
        self._empty = Path(tempfile.mkdtemp(prefix="beolaunch-tftp-empty-"))
        self._empty.chmod(0o500)
        self._server = tftpy.TftpServer(
            tftproot=str(self._empty),
            dyn_file_func=self._open,
            upload_open=self._refuse_upload,
        )
        self._server.sessions = _GuardedSessions()
        return self._server

    def _listen(self) -> None:
        try:
            self._server.listen(
                self.settings.address,
                self.settings.port,
                timeout=self.settings.timeout,
                retries=self.settings.retries,
            )
        except BaseException as exc:  # reported to start() or serve_forever's caller
            self._error = exc

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another.

        Raises TftpServiceError when the socket cannot be bound.
        """
        self._make_server()
        try:
            self._listen()
        finally:
            self._remove_empty()
        if self._error is not None:
            raise TftpServiceError(
                self.settings.address, self.settings.port, str(self._error)
            ) from self._error

    def start(self) -> None:
        """Bind and serve in a daemon thread; return once the socket is bound.

        Raises TftpServiceError when the socket cannot be bound.
        """
        server = self._make_server()
        self._thread = threading.Thread(target=self._listen, name="tftp", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_WAIT_S
        while not server.is_running.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread.join(0.1)
                self._remove_empty()
                problem = str(self._error) if self._error else "did not start"
                raise TftpServiceError(
                    self.settings.address, self.settings.port, problem
                ) from self._error

    def stop(self) -> None:
        """Stop serving: open transfers are dropped (and logged as incomplete).

        Returns within about ``settings.timeout`` seconds: tftpy notices the
        request when its select() times out.
        """
        if self._server is not None:
            self._server.stop(now=True)
        if self._thread is not None:
            self._thread.join(self.settings.timeout + 2.0)
            self._thread = None
        self._remove_empty()

    def _remove_empty(self) -> None:
        if self._empty is not None:
            shutil.rmtree(self._empty, ignore_errors=True)
            self._empty = None

    def __enter__(self) -> TftpService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
