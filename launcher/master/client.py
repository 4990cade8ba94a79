"""A client of the master's user socket, for the console scripts.

Standard library only (asyncio over ``AF_UNIX`` and a few lines of HTTP/1.1):
``beosub`` starts on every launch, and importing an HTTP library cost it about
0.2 s. One request per connection (``Connection: close``); a job's messages come
from ``GET /jobs/{id}/events``, a chunked stream of newline-delimited wire
messages (:mod:`launcher.wire`), so no WebSocket is needed here.

Every failure is a MasterError naming the socket: unreachable (with what to
run), or refused (with the master's own message and the HTTP status).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from launcher.errors import MasterError
from launcher.wire import MASTER_TO_USER, Done, Message, WireError, decode

_ADVICE = "is the master running? start it with 'beoctl cluster up' or 'beoctl master serve'"
#: Longest status or header line, and longest message line, we accept (bytes).
_LINE_MAX = 64 * 1024
_MESSAGE_MAX = 64 * 1024 * 1024


class _Response:
    """The status, headers and body reader of one HTTP/1.1 response."""

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.status = status
        self.headers = headers
        self.reader = reader
        self.writer = writer

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: de-chunked, or up to Content-Length, or to EOF."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await self.reader.readline()
                if not size_line.endswith(b"\n"):
                    raise ConnectionResetError("the connection closed inside a chunk header")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    return  # trailers, if any, are not read: the connection closes
                data = await self.reader.readexactly(size)
                await self.reader.readexactly(2)  # CRLF after each chunk
                yield data
        elif "content-length" in self.headers:
            yield await self.reader.readexactly(int(self.headers["content-length"]))
        else:
            while data := await self.reader.read(65536):
                yield data

    async def body(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    def close(self) -> None:
        self.writer.close()


class MasterClient:
    """Requests to the master at ``socket_path`` (``STATE/run/master.sock``)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)

    async def _send(self, method: str, path: str, body: Any = None) -> _Response:
        """Open a connection, send one request, read the status line and headers."""
        try:
            reader, writer = await asyncio.open_unix_connection(
                str(self.socket_path), limit=_LINE_MAX
            )
        except OSError as exc:
            raise MasterError(
                self.socket_path, f"cannot connect ({exc.strerror or exc}); {_ADVICE}"
            ) from exc
        try:
            payload = b"" if body is None else json.dumps(body).encode()
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: master\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            )
            writer.write(head.encode("ascii") + payload)
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise ConnectionResetError(f"no HTTP answer (got {status_line[:80]!r})")
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            return _Response(int(parts[1]), headers, reader, writer)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            writer.close()
            raise MasterError(self.socket_path, f"the connection failed ({exc})") from exc

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        resp = await self._send(method, path, body)
        try:
            raw = await resp.body()
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            raise MasterError(self.socket_path, f"the connection failed ({exc})") from exc
        finally:
            resp.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        if resp.status >= 400:
            problem = doc.get("error") if isinstance(doc, dict) else None
            raise MasterError(self.socket_path, str(problem or f"HTTP {resp.status}"), resp.status)
        return doc

    async def submit(
        self,
        *,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        nodes: int,
        tasks: int,
        manifest: dict[str, Any],
        batch: bool = False,
        output: str | None = None,
        error: str | None = None,
        label: bool = False,
    ) -> int:
        """Submit a job; returns its id. The master runs it as this process's uid.

        A batch job's output goes to files named by ``output``/``error``
        (Slurm-style patterns, relative to ``cwd``; the master's defaults when None).
        """
        body: dict[str, Any] = {
            "argv": argv,
            "env": env,
            "cwd": cwd,
            "nodes": nodes,
            "tasks": tasks,
            "manifest": manifest,
            "batch": batch,
        }
        if batch:
            body.update(output=output, error=error, label=label)
        doc = await self._request("POST", "/jobs", body)
        if not isinstance(doc, dict) or not isinstance(doc.get("job"), int):
            raise MasterError(self.socket_path, f"unexpected answer to a submission: {doc!r}")
        return int(doc["job"])

    async def stream(self, job: int) -> AsyncIterator[Message]:
        """The job's progress, output and exited messages, ending with its Done."""
        resp = await self._send("GET", f"/jobs/{job}/events")
        try:
            if resp.status >= 400:
                raw = await resp.body()
                try:
                    doc = json.loads(raw)
                except ValueError:
                    doc = None
                problem = doc.get("error") if isinstance(doc, dict) else None
                raise MasterError(
                    self.socket_path,
                    f"cannot watch job {job}: {problem or f'HTTP {resp.status}'}",
                    resp.status,
                )
            pending = b""
            async for data in resp.chunks():
                pending += data
                *lines, pending = pending.split(b"\n")
                if len(pending) > _MESSAGE_MAX:
                    raise MasterError(self.socket_path, f"a message of job {job} is too long")
                for line in lines:
                    if not line.strip():
                        continue  # the master's keepalive
                    try:
                        message = decode(line, MASTER_TO_USER)
                    except WireError as exc:
                        raise MasterError(self.socket_path, f"bad message: {exc}") from exc
                    yield message
                    if isinstance(message, Done):
                        return
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass  # reported below: the stream ended before the job's Done
        finally:
            resp.close()
        raise MasterError(
            self.socket_path, f"the stream of job {job} ended before the job did (master stopped?)"
        )

    async def signal(self, job: int, signum: int) -> str:
        doc = await self._request("POST", f"/jobs/{job}/signal", {"signum": signum})
        return str(doc.get("result")) if isinstance(doc, dict) else ""

    async def nodes(self) -> list[dict[str, Any]]:
        return list(await self._request("GET", "/nodes"))

    async def jobs(self, *, all_jobs: bool = False) -> list[dict[str, Any]]:
        return list(await self._request("GET", "/jobs" + ("?all=1" if all_jobs else "")))

    async def ps(self) -> list[dict[str, Any]]:
        return list(await self._request("GET", "/ps"))
