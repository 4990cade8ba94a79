"""Clients of the master's user socket, for the console scripts.

Standard library only: ``beosub`` starts on every launch, and importing an
HTTP library cost it about 0.2 s. One request per connection
(``Connection: close``, :mod:`launcher.master.http1`); a job's messages come
from ``GET /jobs/{id}/events``, a chunked stream of newline-delimited wire
messages (:mod:`launcher.wire`), so no WebSocket is needed.

:class:`MasterClient` is for asyncio programs (``beostat``, ``beoctl``);
:class:`BlockingClient` does the same with plain blocking sockets, so that
``beosub`` does not import asyncio either (about 70 ms here). Every failure is
a MasterError naming the socket: unreachable (with what to run), or refused
(with the master's own message and the HTTP status).
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from launcher.errors import MasterError, ResponseError
from launcher.master.http1 import ResponseParser, request
from launcher.wire import MASTER_TO_USER, Done, Message, WireError, decode

_ADVICE = "is the master running? start it with 'beoctl cluster up' or 'beoctl master serve'"
_READ = 256 * 1024
#: Longest message line we accept from the master (bytes).
_MESSAGE_MAX = 64 * 1024 * 1024


def _submission(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    nodes: int,
    tasks: int,
    manifest: dict[str, Any],
    batch: bool,
    output: str | None,
    error: str | None,
    label: bool,
) -> dict[str, Any]:
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
    return body


class _Answers:
    """What both clients do with what the master answered."""

    socket_path: Path

    def _unreachable(self, exc: OSError) -> MasterError:
        return MasterError(self.socket_path, f"cannot connect ({exc.strerror or exc}); {_ADVICE}")

    def _broken(self, exc: Exception) -> MasterError:
        return MasterError(self.socket_path, f"the connection failed ({exc})")

    def _document(self, status: int, raw: bytes, what: str = "") -> Any:
        """The JSON answer, or MasterError with the master's message for a status >= 400."""
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        if status >= 400:
            problem = doc.get("error") if isinstance(doc, dict) else None
            raise MasterError(self.socket_path, what + str(problem or f"HTTP {status}"), status)
        return doc

    def _job_id(self, doc: Any) -> int:
        if not isinstance(doc, dict) or not isinstance(doc.get("job"), int):
            raise MasterError(self.socket_path, f"unexpected answer to a submission: {doc!r}")
        return int(doc["job"])

    def _manifest_id(self, doc: Any) -> str:
        value = doc.get("manifest") if isinstance(doc, dict) else None
        if not isinstance(value, str) or len(value) != 64:
            raise MasterError(self.socket_path, f"unexpected answer to a manifest: {doc!r}")
        return value

    def _messages(self, pending: bytearray, data: bytes, job: int) -> list[Message]:
        """Whole message lines of ``pending + data`` decoded; the rest stays in ``pending``."""
        pending += data
        end = pending.rfind(b"\n")
        if end < 0:
            if len(pending) > _MESSAGE_MAX:
                raise MasterError(self.socket_path, f"a message of job {job} is too long")
            return []
        lines = bytes(pending[:end]).split(b"\n")
        del pending[: end + 1]
        messages = []
        for line in lines:
            if not line.strip():
                continue  # the master's keepalive
            try:
                messages.append(decode(line, MASTER_TO_USER))
            except WireError as exc:
                raise MasterError(self.socket_path, f"bad message: {exc}") from exc
        return messages

    def _cut_short(self, job: int) -> MasterError:
        return MasterError(
            self.socket_path, f"the stream of job {job} ended before the job did (master stopped?)"
        )


class BlockingClient(_Answers):
    """Requests to the master at ``socket_path``, each on its own blocking connection.

    Safe to call from a signal handler while a stream is read (another connection).
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)

    def _send(
        self, method: str, path: str, body: Any = None
    ) -> tuple[socket.socket, ResponseParser, list[bytes]]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(self.socket_path))
        except OSError as exc:
            sock.close()
            raise self._unreachable(exc) from exc
        parser = ResponseParser()
        try:
            sock.sendall(request(method, path, body))
            first: list[bytes] = []
            while parser.status is None:
                first += parser.feed(sock.recv(_READ))
        except (OSError, ResponseError) as exc:
            sock.close()
            raise self._broken(exc) from exc
        return sock, parser, first

    def _body(
        self, sock: socket.socket, parser: ResponseParser, first: list[bytes]
    ) -> Iterator[bytes]:
        yield from first
        while not parser.complete:
            yield from parser.feed(sock.recv(_READ))

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        sock, parser, first = self._send(method, path, body)
        try:
            raw = b"".join(self._body(sock, parser, first))
        except (OSError, ResponseError) as exc:
            raise self._broken(exc) from exc
        finally:
            sock.close()
        assert parser.status is not None
        return self._document(parser.status, raw)

    def submit(
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
        program_key: str | None = None,
        late: str | None = None,
    ) -> int:
        """As :meth:`MasterClient.submit`; ``program_key`` (what runs: late files
        are learned against it) and ``late`` ("fail": beosub --strict)."""
        body = _submission(argv, env, cwd, nodes, tasks, manifest, batch, output, error, label)
        body |= {k: v for k, v in (("program_key", program_key), ("late", late)) if v}
        return self._job_id(self._request("POST", "/jobs", body))

    def store_manifest(
        self, manifest: dict[str, Any], *, program_key: str | None = None, late: str | None = None
    ) -> str:
        """As :meth:`MasterClient.store_manifest` (``program_key``, ``late`` as for submit)."""
        body: dict[str, Any] = {"manifest": manifest}
        body |= {k: v for k, v in (("program_key", program_key), ("late", late)) if v}
        return self._manifest_id(self._request("POST", "/manifests", body))

    def learned(self, program_key: str) -> list[str]:
        """The paths this uid's program fetched late before (``GET /learned``)."""
        doc = self._request("GET", "/learned?key=" + urllib.parse.quote(program_key, safe=""))
        paths = doc.get("paths") if isinstance(doc, dict) else None
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ResponseError(f"learned: unexpected answer {doc!r}")
        return paths

    def acct(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """``beoacct COMMAND``'s table as the master lets this uid see it
        (launcher/acct.py): ``{rows, columns, empty}``."""
        doc = self._request("POST", "/acct", {"command": command, "args": args})
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise ResponseError(f"acct: unexpected answer {doc!r}")
        return doc

    def stream(self, job: int) -> Iterator[Message]:
        """As :meth:`MasterClient.stream`."""
        sock, parser, first = self._send("GET", f"/jobs/{job}/events")
        try:
            assert parser.status is not None
            if parser.status >= 400:
                raw = b"".join(self._body(sock, parser, first))
                self._document(parser.status, raw, f"cannot watch job {job}: ")
            pending = bytearray()
            for data in self._body(sock, parser, first):
                for message in self._messages(pending, data, job):
                    yield message
                    if isinstance(message, Done):
                        return
        except (OSError, ResponseError):
            pass  # reported below: the stream ended before the job's Done
        finally:
            sock.close()
        raise self._cut_short(job)

    def signal(self, job: int, signum: int) -> str:
        doc = self._request("POST", f"/jobs/{job}/signal", {"signum": signum})
        return str(doc.get("result")) if isinstance(doc, dict) else ""


class MasterClient(_Answers):
    """Requests to the master at ``socket_path`` (``STATE/run/master.sock``), for asyncio."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)

    async def _exchange(
        self, method: str, path: str, body: Any = None
    ) -> AsyncGenerator[Any, None]:
        """Yield the parser once the head is in, then each piece of the body."""
        import asyncio  # here: BlockingClient users (beosub) never pay for it

        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError as exc:
            raise self._unreachable(exc) from exc
        parser = ResponseParser()
        try:
            writer.write(request(method, path, body))
            await writer.drain()
            pieces: list[bytes] = []
            while parser.status is None:
                pieces += parser.feed(await reader.read(_READ))
            yield parser
            for piece in pieces:
                yield piece
            while not parser.complete:
                for piece in parser.feed(await reader.read(_READ)):
                    yield piece
        finally:
            writer.close()

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        parts: list[bytes] = []
        parser: ResponseParser | None = None
        try:
            async for item in self._exchange(method, path, body):
                if isinstance(item, ResponseParser):
                    parser = item
                else:
                    parts.append(item)
        except (OSError, ResponseError) as exc:
            raise self._broken(exc) from exc
        assert parser is not None and parser.status is not None
        return self._document(parser.status, b"".join(parts))

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
        body = _submission(argv, env, cwd, nodes, tasks, manifest, batch, output, error, label)
        return self._job_id(await self._request("POST", "/jobs", body))

    async def store_manifest(self, manifest: dict[str, Any]) -> str:
        """Store a manifest (and the objects it names, read as this process's uid)
        for a job another scheduler runs; returns its id (64 hex), which the
        Slurm job carries in its comment (``beolaunch:manifest=ID``)."""
        doc = await self._request("POST", "/manifests", {"manifest": manifest})
        return self._manifest_id(doc)

    async def stream(self, job: int) -> AsyncIterator[Message]:
        """The job's progress, output and exited messages, ending with its Done."""
        exchange = self._exchange("GET", f"/jobs/{job}/events")
        try:
            parser = await anext(exchange)
            if parser.status >= 400:
                raw = b"".join([piece async for piece in exchange])
                self._document(parser.status, raw, f"cannot watch job {job}: ")
            pending = bytearray()
            async for data in exchange:
                for message in self._messages(pending, data, job):
                    yield message
                    if isinstance(message, Done):
                        return
        except (OSError, ResponseError, StopAsyncIteration):
            pass  # reported below: the stream ended before the job's Done
        finally:
            await exchange.aclose()
        raise self._cut_short(job)

    async def signal(self, job: int, signum: int) -> str:
        doc = await self._request("POST", f"/jobs/{job}/signal", {"signum": signum})
        return str(doc.get("result")) if isinstance(doc, dict) else ""

    async def nodes(self) -> list[dict[str, Any]]:
        return list(await self._request("GET", "/nodes"))

    async def jobs(self, *, all_jobs: bool = False) -> list[dict[str, Any]]:
        return list(await self._request("GET", "/jobs" + ("?all=1" if all_jobs else "")))

    async def ps(self) -> list[dict[str, Any]]:
        return list(await self._request("GET", "/ps"))
