"""A client of the master's user socket, for the console scripts.

Every failure is a MasterError naming the socket: unreachable (with what to
run), or refused (with the master's own message and the HTTP status).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from launcher.errors import MasterError
from launcher.wire import MASTER_TO_USER, Done, Message, WireError, decode

_BASE = "http://master"
_ADVICE = "is the master running? start it with 'beoctl cluster up' or 'beoctl master serve'"


class MasterClient:
    """Requests to the master at ``socket_path`` (``STATE/run/master.sock``)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket_path)))

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with (
                self._session() as session,
                session.request(method, _BASE + path, json=body) as resp,
            ):
                try:
                    doc = await resp.json(content_type=None)
                except ValueError:
                    doc = None
                if resp.status >= 400:
                    problem = doc.get("error") if isinstance(doc, dict) else None
                    raise MasterError(
                        self.socket_path, str(problem or f"HTTP {resp.status}"), resp.status
                    )
                return doc
        except aiohttp.ClientConnectionError as exc:
            raise MasterError(self.socket_path, f"cannot connect ({exc}); {_ADVICE}") from exc

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
    ) -> int:
        """Submit a job; returns its id. The master runs it as this process's uid."""
        doc = await self._request(
            "POST",
            "/jobs",
            {
                "argv": argv,
                "env": env,
                "cwd": cwd,
                "nodes": nodes,
                "tasks": tasks,
                "manifest": manifest,
                "batch": batch,
            },
        )
        if not isinstance(doc, dict) or not isinstance(doc.get("job"), int):
            raise MasterError(self.socket_path, f"unexpected answer to a submission: {doc!r}")
        return int(doc["job"])

    async def stream(self, job: int) -> AsyncIterator[Message]:
        """The job's output and exited messages, ending with its Done."""
        try:
            async with (
                self._session() as session,
                session.ws_connect(f"{_BASE}/jobs/{job}/stream", heartbeat=30.0) as ws,
            ):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    try:
                        message = decode(msg.data, MASTER_TO_USER)
                    except WireError as exc:
                        raise MasterError(self.socket_path, f"bad message: {exc}") from exc
                    yield message
                    if isinstance(message, Done):
                        return
        except aiohttp.WSServerHandshakeError as exc:
            raise MasterError(
                self.socket_path, f"cannot watch job {job}: HTTP {exc.status}", exc.status
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise MasterError(self.socket_path, f"cannot connect ({exc}); {_ADVICE}") from exc
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
