"""HTTP/1.1 to the master's Unix socket, with the standard library's :mod:`http.client`.

:class:`UnixHTTPConnection` is an ``HTTPConnection`` whose ``connect`` opens
the AF_UNIX socket instead of a TCP one. A connect failure stays the OSError
the kernel gave (the client names the socket and says what to run); a
response that is not HTTP, or that ends early, is a ResponseError saying so,
from ``getresponse`` and from the response's ``read``/``read1`` alike.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
from pathlib import Path

from launcher.errors import ResponseError


def _response_error(exc: http.client.HTTPException) -> ResponseError:
    """What was wrong with the answer, as a ResponseError."""
    if isinstance(exc, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return ResponseError("the connection closed before the response ended")
    if isinstance(exc, http.client.LineTooLong):
        return ResponseError("the response head is too long")
    if isinstance(exc, http.client.BadStatusLine | http.client.UnknownProtocol):
        return ResponseError(f"not an HTTP answer: {str(exc).rstrip()[:80]!r}")
    return ResponseError(f"a bad HTTP answer ({exc})")


class UnixResponse(http.client.HTTPResponse):
    """An ``HTTPResponse`` whose reads raise ResponseError for a bad or cut-short body."""

    def begin(self) -> None:
        try:
            super().begin()
        except http.client.HTTPException as exc:
            raise _response_error(exc) from exc

    def read(self, amt: int | None = None) -> bytes:
        try:
            return super().read(amt)
        except http.client.HTTPException as exc:
            raise _response_error(exc) from exc

    def read1(self, n: int = -1) -> bytes:
        try:
            return super().read1(n)
        except http.client.HTTPException as exc:
            raise _response_error(exc) from exc


class UnixHTTPConnection(http.client.HTTPConnection):
    """One HTTP/1.1 connection to the Unix socket at ``socket_path``.

    No timeout (``timeout=None``, blocking), as the hand-written client had: a
    job's event stream may wait on the job for as long as it runs, with only the
    master's keepalive lines between its messages.
    """

    response_class = UnixResponse

    def __init__(self, socket_path: Path, timeout: float | None = None) -> None:
        # "master" is only the Host header's value: connect() never resolves it.
        super().__init__("master", timeout=timeout)
        self.socket_path = socket_path
        # http.client drops ``sock`` once a response says the connection closes
        # after it; the response still reads from the socket, which abort() shuts.
        self._unix_socket: socket.socket | None = None

    def connect(self) -> None:
        """Open the socket; raises the OSError of ``connect(2)`` (missing, refused)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = self._unix_socket = sock

    def shutdown(self) -> None:
        """Shut the socket down both ways: a read blocked on it in another thread
        returns at once (``close`` would not wake it, and must wait for that read
        to return: http.client's response is not safe to close under a reader)."""
        if self._unix_socket is not None:
            with contextlib.suppress(OSError):  # already shut down or closed
                self._unix_socket.shutdown(socket.SHUT_RDWR)
