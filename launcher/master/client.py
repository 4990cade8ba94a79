"""Clients of the master's user socket, for the console scripts.

Standard library only: ``beosub`` starts on every launch, and importing an
HTTP library cost it about 0.2 s. One request per connection
(``Connection: close``) with :mod:`http.client` over the Unix socket
(:mod:`launcher.master.unixhttp`); a job's messages come from
``GET /jobs/{id}/events``, a chunked stream of newline-delimited wire messages
(:mod:`launcher.wire`), so no WebSocket is needed.

:class:`BlockingClient` speaks on plain blocking sockets, so that ``beosub``
does not import asyncio (about 70 ms here); :class:`MasterClient` is the same
client for asyncio programs (``beostat``, ``beoctl``), each blocking call run
in a worker thread. Every failure is a MasterError naming the socket:
unreachable (with what to run), or refused (with the master's own message and
the HTTP status).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from http.client import HTTPResponse
from pathlib import Path
from typing import Any, NotRequired, ParamSpec, Required, TypedDict, TypeVar, Unpack

from launcher.errors import MasterError, ResponseError
from launcher.master.unixhttp import UnixHTTPConnection
from launcher.wire import MASTER_TO_USER, Done, Message, WireError, decode

_ADVICE = "is the master running? start it with 'beoctl cluster up' or 'beoctl master serve'"
_READ = 256 * 1024
#: Longest message line we accept from the master (bytes).
_MESSAGE_MAX = 64 * 1024 * 1024
_HEADERS = {"Connection": "close", "Content-Type": "application/json"}

P = ParamSpec("P")
T = TypeVar("T")


class Submission(TypedDict, total=False):
    """The fields of ``POST /jobs`` a client sends (the keyword arguments of ``submit``).

    A batch job's output goes to files named by ``output``/``error``
    (Slurm-style patterns, relative to ``cwd``; the master's defaults when None).
    ``program_key`` is what runs (late files are learned against it), ``late``
    "fail" for ``beosub --strict``.
    """

    argv: Required[list[str]]
    env: Required[dict[str, str]]
    cwd: Required[str]
    nodes: Required[int]
    tasks: Required[int]
    manifest: Required[dict[str, Any]]
    batch: NotRequired[bool]
    output: NotRequired[str | None]
    error: NotRequired[str | None]
    label: NotRequired[bool]
    program_key: NotRequired[str | None]
    late: NotRequired[str | None]


def _submission(fields: Submission) -> dict[str, Any]:
    """The body of ``POST /jobs``: the batch fields only for a batch job, the
    program's key and late policy only when set."""
    body: dict[str, Any] = {
        "argv": fields["argv"],
        "env": fields["env"],
        "cwd": fields["cwd"],
        "nodes": fields["nodes"],
        "tasks": fields["tasks"],
        "manifest": fields["manifest"],
        "batch": fields.get("batch", False),
    }
    if body["batch"]:
        body.update(
            output=fields.get("output"), error=fields.get("error"), label=fields.get("label", False)
        )
    return body | _program_fields(fields.get("program_key"), fields.get("late"))


def _program_fields(program_key: str | None, late: str | None) -> dict[str, str]:
    return {k: v for k, v in (("program_key", program_key), ("late", late)) if v}


def _json(raw: bytes) -> Any:
    """The JSON document of a body; None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


class _Events:
    """The messages of one job as ``GET /jobs/{id}/events`` streams them."""

    def __init__(
        self, client: BlockingClient, conn: UnixHTTPConnection, response: HTTPResponse, job: int
    ) -> None:
        self.client = client
        self.conn = conn
        self.response = response
        self.job = job
        self.done = False
        self._pending = bytearray()
        # close() may come from another thread while next() reads (MasterClient).
        self._lock = threading.Lock()
        self._reading = False
        self._closed = False

    def next(self) -> list[Message] | None:
        """The messages of the next read, up to the job's Done; None once the Done came.

        Raises MasterError when the stream ends or fails before the Done (master stopped?).
        """
        if self.done:
            return None
        with self._lock:
            self._reading = not self._closed
        try:
            data = self.response.read1(_READ) if self._reading else b""
        except (OSError, ResponseError):
            data = b""  # reported below: the stream ended before the job's Done
        finally:
            with self._lock:
                close, self._reading = self._reading and self._closed, False
            if close:
                self.conn.close()
        if not data:
            raise self.client._cut_short(self.job)
        messages = self.client._messages(self._pending, data, self.job)
        for i, message in enumerate(messages):
            if isinstance(message, Done):
                self.done = True
                return messages[: i + 1]
        return messages

    def close(self) -> None:
        """Close the connection; a read blocked on it in another thread returns at
        once, and closes the connection itself."""
        self.conn.shutdown()
        with self._lock:
            self._closed = True
            reading = self._reading
        if not reading:
            self.conn.close()


class BlockingClient:
    """Requests to the master at ``socket_path``, each on its own blocking connection.

    Safe to call from a signal handler while a stream is read (another connection).
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)

    def _unreachable(self, exc: OSError) -> MasterError:
        return MasterError(self.socket_path, f"cannot connect ({exc.strerror or exc}); {_ADVICE}")

    def _broken(self, exc: Exception) -> MasterError:
        return MasterError(self.socket_path, f"the connection failed ({exc})")

    def _document(self, status: int, raw: bytes) -> Any:
        """The JSON answer, or MasterError with the master's message for a status >= 400."""
        if status >= 400:
            raise self._refused(status, raw)
        return _json(raw)

    def _refused(self, status: int, raw: bytes, what: str = "") -> MasterError:
        doc = _json(raw)
        problem = doc.get("error") if isinstance(doc, dict) else None
        return MasterError(self.socket_path, what + str(problem or f"HTTP {status}"), status)

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

    def _open(
        self, method: str, path: str, body: Any = None
    ) -> tuple[UnixHTTPConnection, HTTPResponse]:
        """Send the request; the connection and the response, its head read."""
        conn = UnixHTTPConnection(self.socket_path)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise self._unreachable(exc) from exc
        payload = b"" if body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, payload, _HEADERS)
            response = conn.getresponse()
        except (OSError, ResponseError) as exc:
            conn.close()
            raise self._broken(exc) from exc
        return conn, response

    def _body(self, conn: UnixHTTPConnection, response: HTTPResponse) -> bytes:
        """The whole body of ``response``; the connection is closed after it."""
        try:
            return response.read()
        except (OSError, ResponseError) as exc:
            raise self._broken(exc) from exc
        finally:
            conn.close()

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        conn, response = self._open(method, path, body)
        return self._document(response.status, self._body(conn, response))

    def _watch(self, job: int) -> _Events:
        """Open the job's event stream; MasterError (with the status) if refused."""
        conn, response = self._open("GET", f"/jobs/{job}/events")
        if response.status < 400:
            return _Events(self, conn, response, job)
        raw = self._body(conn, response)
        raise self._refused(response.status, raw, f"cannot watch job {job}: ")

    def submit(self, **fields: Unpack[Submission]) -> int:
        """Submit a job (:class:`Submission` says the fields); returns its id. The
        master runs it as this process's uid."""
        return self._job_id(self._request("POST", "/jobs", _submission(fields)))

    def store_manifest(
        self, manifest: dict[str, Any], *, program_key: str | None = None, late: str | None = None
    ) -> str:
        """Store a manifest (and the objects it names, read as this process's uid)
        for a job another scheduler runs; returns its id (64 hex), which the
        Slurm job carries in its comment (``beolaunch:manifest=ID``).
        ``program_key`` and ``late`` as for :meth:`submit`."""
        body = {"manifest": manifest} | _program_fields(program_key, late)
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
        """The job's progress, output and exited messages, ending with its Done."""
        events = self._watch(job)
        try:
            while (messages := events.next()) is not None:
                yield from messages
        finally:
            events.close()

    def signal(self, job: int, signum: int) -> str:
        doc = self._request("POST", f"/jobs/{job}/signal", {"signum": signum})
        return str(doc.get("result")) if isinstance(doc, dict) else ""

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/nodes"))

    def jobs(self, *, all_jobs: bool = False) -> list[dict[str, Any]]:
        return list(self._request("GET", "/jobs" + ("?all=1" if all_jobs else "")))

    def ps(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/ps"))

    def status_login(self) -> str:
        """The status page's URL with a login token for the caller (statustoken.py)."""
        return str(self._request("GET", "/status-login")["url"])


async def _in_thread(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    import asyncio  # here: BlockingClient users (beosub) never pay for it

    return await asyncio.to_thread(call, *args, **kwargs)


class MasterClient:
    """Requests to the master at ``socket_path`` (``STATE/run/master.sock``), for asyncio:
    :class:`BlockingClient`'s, each run in a worker thread."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)
        self._blocking = BlockingClient(self.socket_path)

    async def submit(self, **fields: Unpack[Submission]) -> int:
        """As :meth:`BlockingClient.submit`."""
        return await _in_thread(self._blocking.submit, **fields)

    async def store_manifest(self, manifest: dict[str, Any]) -> str:
        """As :meth:`BlockingClient.store_manifest`."""
        return await _in_thread(self._blocking.store_manifest, manifest)

    async def stream(self, job: int) -> AsyncIterator[Message]:
        """As :meth:`BlockingClient.stream`; leaving it early (or cancelling it)
        closes the connection, which ends a read still waiting in its thread."""
        events = await _in_thread(self._blocking._watch, job)
        try:
            while (messages := await _in_thread(events.next)) is not None:
                for message in messages:
                    yield message
        finally:
            events.close()

    async def signal(self, job: int, signum: int) -> str:
        return await _in_thread(self._blocking.signal, job, signum)

    async def nodes(self) -> list[dict[str, Any]]:
        return await _in_thread(self._blocking.nodes)

    async def jobs(self, *, all_jobs: bool = False) -> list[dict[str, Any]]:
        return await _in_thread(self._blocking.jobs, all_jobs=all_jobs)

    async def ps(self) -> list[dict[str, Any]]:
        return await _in_thread(self._blocking.ps)

    async def status_login(self) -> str:
        return await _in_thread(self._blocking.status_login)
