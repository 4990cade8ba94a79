"""HTTP/1.1 for the master's clients, without I/O: a request's bytes, a response parser.

The clients (:mod:`launcher.master.client`) send one request per connection
(``Connection: close``) over the Unix socket and feed what they read to a
:class:`ResponseParser`, blocking or from asyncio alike. Enough HTTP for our
own server (aiohttp): a status line, headers, and a body sized by
Content-Length, chunked, or ended by the connection's close.
"""

from __future__ import annotations

import json
from typing import Any

from launcher.errors import ResponseError

#: Longest status line plus headers we accept (bytes).
HEAD_MAX = 64 * 1024


def request(method: str, path: str, body: Any = None) -> bytes:
    """The bytes of one request; ``body`` (if not None) is sent as JSON."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: master\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode("ascii") + payload


class ResponseParser:
    """Feed it what the connection reads (``b""`` at its end); it returns body bytes.

    ``status`` and ``headers`` (lower-case names) are set once the head is in;
    ``complete`` once the body ended. Raises ResponseError on a malformed
    response or one cut short.
    """

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.complete = False
        self._buf = bytearray()
        self._mode = "head"  # then length, chunk-size, chunk-data, chunk-end, eof; done
        self._left = 0

    def feed(self, data: bytes) -> list[bytes]:
        if not data:
            if self._mode == "eof":
                self._finish()
            if not self.complete:
                raise ResponseError("the connection closed before the response ended")
            return []
        self._buf += data
        out: list[bytes] = []
        while self._step(out):
            pass
        return out

    def _finish(self) -> None:
        self._mode = "done"
        self.complete = True

    def _take(self, out: list[bytes]) -> None:
        n = min(len(self._buf), self._left)
        if n:
            out.append(bytes(self._buf[:n]))
            del self._buf[:n]
            self._left -= n

    def _step(self, out: list[bytes]) -> bool:
        """One parsing step; False when it needs more bytes (or is done)."""
        mode = self._mode
        if mode == "head":
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > HEAD_MAX:
                    raise ResponseError("the response head is too long")
                return False
            self._head(bytes(self._buf[:end]))
            del self._buf[: end + 4]
            return True
        if mode == "length":
            self._take(out)
            if self._left == 0:
                self._finish()
            return False
        if mode == "chunk-size":
            end = self._buf.find(b"\r\n")
            if end < 0:
                return False
            try:
                self._left = int(bytes(self._buf[:end]).split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise ResponseError(f"bad chunk size {bytes(self._buf[:end])[:20]!r}") from exc
            del self._buf[: end + 2]
            if self._left == 0:
                self._finish()  # trailers are not read: the connection closes
                return False
            self._mode = "chunk-data"
            return True
        if mode == "chunk-data":
            self._take(out)
            if self._left:
                return False
            self._mode = "chunk-end"
            return True
        if mode == "chunk-end":
            if len(self._buf) < 2:
                return False
            del self._buf[:2]
            self._mode = "chunk-size"
            return True
        if mode == "eof" and self._buf:
            out.append(bytes(self._buf))
            self._buf.clear()
        return False

    def _head(self, head: bytes) -> None:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ResponseError(f"not an HTTP answer: {status_line[:80]!r}")
        self.status = int(parts[1])
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._mode = "chunk-size"
        elif "content-length" in self.headers:
            try:
                self._left = int(self.headers["content-length"])
            except ValueError as exc:
                raise ResponseError("bad Content-Length") from exc
            self._mode = "length"
            if self._left == 0:
                self._finish()
        else:
            self._mode = "eof"
