"""The node's half of late files: a job's FUSE root asks, the master answers.

Each FUSE root built for a job with the late policy ``fetch`` gets a
:class:`LateBridge`: a socket pair, one end inherited by the root's FUSE
server (:mod:`cachefs.view.late`), the other served by a thread here that
hands each request to the agent's event loop (:meth:`LateLookups.resolve`).
There a ``late_lookup`` goes to the master in the job's name; a file answer
is fetched by sha256 from the master's object service with the job's
capability, verified and pinned for the job in the node cache before the
root sees it, so a job's late files survive the master going away like its
other files.

Bounds: a request waits at most ``late_timeout_s`` (the master away, or slow),
then fails with an I/O error logged here. After such a timeout, the job's
next requests fail at once until the master is connected again, so a program
probing many paths does not wait the bound for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from cachefs.cache import NodeCache
from cachefs.errors import CachefsError
from cachefs.manifest import is_sha256
from cachefs.source import ObjectSource
from cachefs.view.fuse import LateLink
from launcher import wire
from launcher.envconfig import NodeEnvSettings
from launcher.node.outbox import Outbox

log = logging.getLogger(__name__)

Resolve = Callable[[int, str, str], Coroutine[Any, Any, dict[str, Any]]]
#: Seconds between tries to send while the master is away.
RESEND_S = 0.25
#: How long a directory's names, a symlink, or an absence the master told one
#: job answers the next jobs of the same user on this node, when the master
#: says only root may change that directory (``stable``: /usr, not a work dir).
#: Files are never reused: each job's late files are its own, recorded.
SHARED_ANSWER_S = 60.0
_SHAREABLE = ("dir", "symlink", "file", "absent", "denied")


class LateBridge:
    """One root's link from its FUSE server to the agent's event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        resolve: Resolve,
        job: int,
        settings: NodeEnvSettings,
    ) -> None:
        self._loop = loop
        self._resolve = resolve
        #: the job the root serves now (a kept root is handed to the next job)
        self.job = job
        self.settings = settings
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._theirs: socket.socket | None = theirs
        self.asked = 0
        #: objects of the files it fetched
        self.fetched: set[str] = set()
        #: it got an answer about a directory someone other than root may change
        self.unstable = False
        self._thread = threading.Thread(target=self._serve, name=f"late-{job}", daemon=True)
        self._thread.start()

    def link(self, closed: Sequence[str] = ()) -> LateLink:
        """What :func:`cachefs.view.fuse.mount` passes to the server (once)."""
        assert self._theirs is not None
        # The server waits a little longer than we do, so our error answer wins.
        timeout = self.settings.late_timeout_s + 5.0
        never = (*closed, *self.settings.no_fallback, *self.settings.binds)
        return LateLink(self._theirs, timeout, never)

    def mounted(self) -> None:
        """The server has its end: close ours of it."""
        if self._theirs is not None:
            self._theirs.close()
            self._theirs = None

    def _serve(self) -> None:
        with contextlib.suppress(OSError), self._ours.makefile("rwb") as stream:
            for line in stream:
                self.asked += 1
                answer = self._answer(line)
                stream.write(json.dumps(answer).encode() + b"\n")
                stream.flush()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            op, path = str(request["op"]), str(request["path"])
        except (ValueError, KeyError, TypeError):
            return {"kind": "error", "message": "bad request"}
        future = asyncio.run_coroutine_threadsafe(self._resolve(self.job, op, path), self._loop)
        try:
            answer = future.result(self.settings.late_timeout_s + 2.0)
            if answer.get("kind") == "file" and "sha256" in answer:
                self.fetched.add(str(answer.get("sha256")))
            elif not answer.get("stable"):
                self.unstable = True
            return answer
        except Exception as exc:
            future.cancel()
            self.unstable = True
            log.warning("job %d: late %s of %s failed: %r", self.job, op, path, exc)
            return {"kind": "error", "message": f"late {op} failed: {exc!r}"}

    @property
    def reusable(self) -> bool:
        """Whether a later job may run in this root: it fetched no file (those
        are this job's) and all it learned is of directories only root may
        change (see SHARED_ANSWER_S)."""
        return not self.fetched and not self.unstable

    def close(self) -> None:
        """Stop serving (the server is unmounted first)."""
        with contextlib.suppress(OSError):
            self._ours.shutdown(socket.SHUT_RDWR)
        self._ours.close()
        self.mounted()


class LateLookups:
    """The agent's side: ``late_lookup`` out, ``late_answer`` in, objects fetched."""

    def __init__(self, cache: NodeCache, outbox: Outbox) -> None:
        self.cache = cache
        self.outbox = outbox
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        #: jobs whose last request timed out while the master was away
        self._stalled: set[int] = set()
        #: (uid, op, path) -> (when, answer) of shareable answers, for later jobs
        self._shared: dict[tuple[int, str, str], tuple[float, dict[str, Any]]] = {}
        self.shared_hits = 0

    def answered(self, message: wire.LateAnswer) -> None:
        """A ``late_answer`` from the master."""
        future = self._waiting.get(message.request)
        if future is not None and not future.done():
            future.set_result(message.answer)

    async def resolve(
        self,
        job: int,
        op: str,
        path: str,
        settings: NodeEnvSettings,
        sources: Sequence[ObjectSource],
        uid: int | None = None,
    ) -> dict[str, Any]:
        """The answer for the job's root (a file's with ``backing``, its cached
        object). ``uid``: the job's user, whose recent directory answers to
        other jobs on this node are reused (SHARED_ANSWER_S)."""
        if op not in ("lookup", "list", "open") or not settings.fallback_allowed(path):
            return {"kind": "absent"}
        now = time.monotonic()
        key = (uid, op, path) if uid is not None else None
        if key is not None:
            kept = self._shared.get(key)
            if kept is not None and now - kept[0] < SHARED_ANSWER_S:
                self.shared_hits += 1
                return kept[1]
        if job in self._stalled and not self.outbox.connected:
            return {"kind": "error", "message": "the master is away"}
        self._stalled.discard(job)
        deadline = time.monotonic() + settings.late_timeout_s
        request = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request] = future
        try:
            message = wire.LateLookup(job, request, op, path)
            while not await self.outbox.send(message):
                if time.monotonic() > deadline:
                    return self._stall(job, path, "the master is away")
                await asyncio.sleep(RESEND_S)
            try:
                answer = await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return self._stall(job, path, "the master did not answer")
        finally:
            self._waiting.pop(request, None)
        if op != "open" or answer.get("kind") != "file":
            shareable = answer.get("kind") in _SHAREABLE or op == "lookup"
            if key is not None and shareable and answer.get("stable"):
                self._keep(key, now, answer)
            return answer
        return await self._fetch(job, path, answer, sources, deadline)

    def _keep(self, key: tuple[int, str, str], now: float, answer: dict[str, Any]) -> None:
        if len(self._shared) > 100_000:  # a bound: drop what is stale
            self._shared = {k: v for k, v in self._shared.items() if now - v[0] < SHARED_ANSWER_S}
        self._shared[key] = (now, answer)

    def _stall(self, job: int, path: str, why: str) -> dict[str, Any]:
        self._stalled.add(job)
        log.error("job %d: late lookup of %s failed: %s", job, path, why)
        return {"kind": "error", "message": why}

    async def _fetch(
        self,
        job: int,
        path: str,
        answer: dict[str, Any],
        sources: Sequence[ObjectSource],
        deadline: float,
    ) -> dict[str, Any]:
        sha, size = answer.get("sha256"), answer.get("size")
        if not is_sha256(sha) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return {"kind": "error", "message": "the master's answer has no valid sha256/size"}
        assert isinstance(sha, str)
        masters = [s for s in sources if s.kind == "master"] or list(sources)
        try:
            await asyncio.wait_for(
                self.cache.fill({sha: size}, masters, job=str(job)),
                max(0.1, deadline - time.monotonic()),
            )
        except (CachefsError, TimeoutError) as exc:
            log.error("job %d: late file %s (%s) not fetched: %s", job, path, sha[:16], exc)
            return {"kind": "error", "message": f"not fetched: {exc}"}
        log.info("job %d: late file %s (%d bytes)", job, path, size)
        return {**answer, "backing": str(self.cache.object_path(sha))}
