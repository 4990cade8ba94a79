"""The user API: HTTP on the Unix socket ``STATE/run/master.sock``.

Trust model: the caller is the uid the kernel reports for the socket peer
(``SO_PEERCRED``), never anything in the request. A submission runs as that
uid, so its manifest must name it as owner; root submissions are refused
unless the configuration allows them. Only the owner of a job, or root, may
watch or signal it. Listings are open to every local user, as ``ps`` is.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from cachefs import httpguard
from cachefs.errors import CachefsError, RequestBodyError
from cachefs.manifest import Manifest
from cachefs.store import Store
from launcher import acct
from launcher.errors import (
    BeolaunchError,
    DatabaseUnavailable,
    NotFoundError,
    OutputPatternError,
    SubmissionError,
)
from launcher.master import patterns
from launcher.master.batch import BatchOutput
from launcher.master.dbwork import DbWork
from launcher.master.nodes import NodeRegistry
from launcher.master.quota import check_quota
from launcher.master.scheduler import Scheduler
from launcher.master.unixroot import Augmented, UnixRoot
from launcher.readproof import SeenFiles
from launcher.state.db import transaction
from launcher.state.models import Job
from launcher.state.nodes import node_states
from launcher.state.queries import job_summaries, learned_paths
from launcher.state.record import (
    record_job,
    record_submitted_manifest,
    record_system_objects,
)
from launcher.submission import ingest_submission
from launcher.wire import Done, encode

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: Seconds between keepalive lines on an idle event stream: a watcher that went
#: away is noticed at the next write.
KEEPALIVE_S = 15.0
#: The largest body of ``POST /jobs`` and ``POST /manifests`` (the manifest is
#: most of it, about 230 bytes an entry). aiohttp's default, 1 MiB, refused a
#: real Python environment with a bare 413: python3.11 with its whole standard
#: library, numpy and scipy from Debian 12 (``beoctl closure --include ...``) is
#: 5,262 entries, 1.19 MB canonical, 1.27 MB as a submission. 32 MiB takes
#: about 140,000 entries and still bounds what one request makes the master hold.
MAX_SUBMISSION_BYTES = 32 << 20
#: Bodies of the other requests (``signal``).
MAX_SMALL_BODY = 64 << 10
#: A job id in a path: at most 18 digits, so it fits the database's 64-bit integer.
JOB_ID = "{id:[0-9]{1,18}}"


@dataclass(frozen=True)
class Submission:
    """A validated ``POST /jobs`` body."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    nodes: int
    tasks: int
    manifest: Manifest
    batch: bool
    #: batch only: absolute output file patterns (stderr None: with stdout), --label
    output: str | None = None
    error: str | None = None
    label: bool = False
    #: what runs (cachefs.closure Closure.key) and beosub --strict ("fail")
    program_key: str | None = None
    late: str | None = None


#: Longest program key taken (a path and a -c digest fit many times over).
MAX_PROGRAM_KEY = 8192


def program_fields(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """``program_key`` and ``late`` of a submission (both optional); SubmissionError if bad."""
    key = body.get("program_key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_PROGRAM_KEY):
        raise SubmissionError(
            "program_key", f"expected a string of 1-{MAX_PROGRAM_KEY} characters, got {key!r}"
        )
    late = body.get("late")
    if late is not None and late not in ("fetch", "fail"):
        raise SubmissionError("late", f"expected 'fetch' or 'fail', got {late!r}")
    return key, late


def peer_uid(request: web.Request) -> int:
    """The uid of the process at the other end of the Unix socket."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        raise SubmissionError(None, "cannot tell who is calling (no socket)", status=403)
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return int(uid)


def _field(body: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SubmissionError(name, f"expected {what}, got {value!r}")
    return value


def parse_submission(body: Any) -> Submission:
    """Check every field of a submission; raise SubmissionError (400) naming the bad one."""
    if not isinstance(body, dict):
        raise SubmissionError(None, "the body must be a JSON object")
    argv = _field(body, "argv", list, "a non-empty list of strings")
    if not argv or not all(isinstance(a, str) for a in argv):
        raise SubmissionError("argv", "expected a non-empty list of strings")
    env = _field(body, "env", dict, "an object of strings")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise SubmissionError("env", "expected an object whose keys and values are strings")
    cwd = _field(body, "cwd", str, "an absolute path")
    if not cwd.startswith("/") or "\0" in cwd:
        raise SubmissionError("cwd", f"expected an absolute path, got {cwd!r}")
    nodes = _field(body, "nodes", int, "a node count")
    tasks = _field(body, "tasks", int, "a task count")
    if nodes < 1:
        raise SubmissionError("nodes", f"expected at least 1, got {nodes}")
    if tasks < nodes:
        raise SubmissionError(
            "tasks", f"expected at least one task per node ({nodes}), got {tasks}"
        )
    batch = body.get("batch", False)
    if not isinstance(batch, bool):
        raise SubmissionError("batch", f"expected true or false, got {batch!r}")
    try:
        manifest = Manifest.from_document(body.get("manifest"))
    except CachefsError as exc:
        raise SubmissionError("manifest", str(exc)) from exc
    output, error, label = _batch_fields(body, batch, cwd)
    key, late = program_fields(body)
    return Submission(
        argv, env, cwd, nodes, tasks, manifest, batch, output, error, label, key, late
    )


def _batch_fields(
    body: dict[str, Any], batch: bool, cwd: str
) -> tuple[str | None, str | None, bool]:
    """A batch job's output patterns, absolute (relative ones are in ``cwd``), and --label."""
    label = body.get("label", False)
    if not isinstance(label, bool):
        raise SubmissionError("label", f"expected true or false, got {label!r}")
    found: list[str | None] = []
    for name in ("output", "error"):
        value = body.get(name)
        if value is None:
            found.append(None)
            continue
        if not batch:
            raise SubmissionError(name, "only a batch job writes output files (set batch)")
        if not isinstance(value, str):
            raise SubmissionError(name, f"expected a file name pattern, got {value!r}")
        try:
            patterns.check(value)
        except OutputPatternError as exc:
            raise SubmissionError(name, str(exc)) from exc
        found.append(posixpath.join(cwd, value))
    output, error = found
    if batch and output is None:
        output = posixpath.join(cwd, patterns.DEFAULT_OUTPUT)
    return output, error, label


def check_owner(sub: Submission, uid: int, *, allow_root: bool) -> None:
    """Raise SubmissionError (403) unless ``uid`` may run this submission."""
    check_manifest_owner(sub.manifest, uid, allow_root=allow_root)


def check_manifest_owner(manifest: Manifest, uid: int, *, allow_root: bool) -> None:
    """Raise SubmissionError (403) unless ``uid`` may run jobs with ``manifest``."""
    if manifest.owner != uid:
        raise SubmissionError(
            "manifest",
            f"the manifest is owned by uid {manifest.owner}, but you are uid {uid}; "
            "make the manifest as yourself",
            status=403,
        )
    if uid == 0 and not allow_root:
        raise SubmissionError(
            None,
            "jobs as root are refused; submit as an ordinary user "
            "(or set [jobs] allow_root = true in the master's config)",
            status=403,
        )
    try:
        pwd.getpwuid(uid)
    except KeyError:
        raise SubmissionError(None, f"uid {uid} has no account on the master", status=403) from None


def check_fits(manifest: Manifest, budgets: list[int]) -> None:
    """Raise SubmissionError (413) when the manifest's files fit in no node's cache:
    such a job could only be refused by every node it lands on. ``budgets``: the
    cache budgets the connected nodes reported (none known: no check)."""
    need = sum(manifest.objects().values())
    if budgets and need > max(budgets):
        raise SubmissionError(
            "manifest",
            f"the job's files are {need} bytes, more than any node's cache holds "
            f"(the largest: {max(budgets)} bytes); ship less (--include), or ask for "
            "bigger node caches",
            status=413,
        )


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _error(exc: BeolaunchError, status: int) -> web.Response:
    if isinstance(exc, DatabaseUnavailable):
        status = 503  # nothing the caller did: the same request works once it is back
    return web.json_response({"error": str(exc)}, status=status)


#: The largest ``POST /acct`` body (a command and a few arguments).
ACCT_BODY = 64 * 1024


@web.middleware
async def _database_away(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Any request that needs the state database while it is away: 503, retry."""
    try:
        return await handler(request)
    except DatabaseUnavailable as exc:
        return _error(exc, 503)


async def _body(request: web.Request, limit: int) -> Any:
    """The request's JSON body (cachefs.httpguard: bounded, within its deadline).

    Raises SubmissionError with the status to answer: 400, 408, or 413 naming the
    limit and what to do."""
    try:
        return await httpguard.read_json(request, limit=limit, what="the request body")
    except RequestBodyError as exc:
        problem = str(exc)
        if exc.status == 413 and limit == MAX_SUBMISSION_BYTES:
            problem += (
                f" ({limit >> 20} MiB, the master's MAX_SUBMISSION_BYTES); the manifest is"
                " most of it: submit a smaller closure (fewer --include paths)"
            )
        raise SubmissionError(None, problem, status=exc.status) from None


class UserApi:
    """Handlers of the user socket, over the scheduler and the node registry.

    Database work runs in ``db``'s threads, never in the event loop that also
    relays every node's output."""

    def __init__(
        self,
        db: DbWork,
        store: Store,
        scheduler: Scheduler,
        registry: NodeRegistry,
        *,
        allow_root: bool,
        batch: BatchOutput | None = None,
        user_quota_bytes: int = 0,
        unixroot: UnixRoot | None = None,
        bytes_served: Callable[[int], int | None] | None = None,
        status_login: Callable[[int], str] | None = None,
    ) -> None:
        self.db = db
        self.engine = db.engine
        self.store = store
        self.scheduler = scheduler
        self.registry = registry
        self.allow_root = allow_root
        self.batch = batch
        self.user_quota_bytes = user_quota_bytes
        #: adds the master's /etc to each submitted manifest (None: nothing added)
        self.unixroot = unixroot
        #: job -> bytes the master's object service sent for it since the master
        #: started (``bytes_served`` of each /jobs row; None: not known here)
        self.bytes_served = bytes_served
        #: uid -> a status page login URL for it (statustoken.py); None: no page
        self.status_login = status_login
        #: files the master hashed for a submitter, so warm launches skip the hash
        self.seen = SeenFiles()
        #: set at shutdown: event streams end (without a Done: the client says so)
        self.stopping = asyncio.Event()

    def app(self) -> web.Application:
        # Bodies are read by _body, which bounds them itself; this bound is aiohttp's own.
        app = web.Application(client_max_size=MAX_SUBMISSION_BYTES, middlewares=[_database_away])
        app.router.add_post("/jobs", self.submit)
        app.router.add_post("/manifests", self.store_manifest)
        app.router.add_post("/acct", self.acct)
        app.router.add_get("/learned", self.learned)
        app.router.add_get("/jobs", self.jobs)
        app.router.add_get(f"/jobs/{JOB_ID}/events", self.events)
        app.router.add_post(f"/jobs/{JOB_ID}/signal", self.signal)
        app.router.add_get("/nodes", self.nodes)
        app.router.add_get("/ps", self.ps)
        app.router.add_get("/status-login", self.status_link)

        async def on_shutdown(_app: web.Application) -> None:
            self.stopping.set()

        app.on_shutdown.append(on_shutdown)
        return app

    async def submit(self, request: web.Request) -> web.Response:
        try:
            uid = peer_uid(request)
            body = await _body(request, MAX_SUBMISSION_BYTES)
            sub = parse_submission(body)
            check_owner(sub, uid, allow_root=self.allow_root)
            check_fits(sub.manifest, self._budgets())
            await self.db.run(self._check_quota, sub.manifest, uid)
            if sub.batch and self.batch is None:
                raise SubmissionError("batch", "this master does not run batch jobs")
            account = pwd.getpwuid(uid)
            groups = os.getgrouplist(account.pw_name, account.pw_gid)
            # Every file opened by a helper running as the caller (the kernel
            # decides access) and checked against its digest; copies what the
            # store lacks. A digest the store holds proves nothing by itself.
            await asyncio.to_thread(
                ingest_submission, self.store, sub.manifest, uid, account.pw_gid, groups, self.seen
            )
            augmented = await asyncio.to_thread(self._augment, sub.manifest)
            manifest_id, _size = self.store.ingest_bytes(augmented.manifest.canonical())
            job_id = await self.db.write(
                lambda session: _record_submission(session, sub, uid, augmented, manifest_id)
            )
        except SubmissionError as exc:
            return _error(exc, exc.status)
        except BeolaunchError as exc:
            return _error(exc, 400)
        if sub.batch and self.batch is not None:
            self.batch.expect(job_id)
        self.scheduler.submit(job_id)
        return web.json_response({"job": job_id})

    async def store_manifest(self, request: web.Request) -> web.Response:
        """``POST /manifests`` ``{manifest}``: ingest and record a manifest for a job
        another scheduler runs (Slurm: ``beosub`` then ``sbatch`` with its id).

        The same checks and ingest as ``POST /jobs``; no job row is made (the
        master makes it when the first node's prolog asks). Answers ``{manifest: ID}``:
        the id of the manifest stored, with the master's /etc (unixroot.py), which
        is not the id of the manifest sent.
        """
        try:
            uid = peer_uid(request)
            body = await _body(request, MAX_SUBMISSION_BYTES)
            if not isinstance(body, dict):
                raise SubmissionError(None, "the body must be a JSON object")
            try:
                manifest = Manifest.from_document(body.get("manifest"))
            except CachefsError as exc:
                raise SubmissionError("manifest", str(exc)) from exc
            key, late = program_fields(body)
            check_manifest_owner(manifest, uid, allow_root=self.allow_root)
            check_fits(manifest, self._budgets())
            await self.db.run(self._check_quota, manifest, uid)
            account = pwd.getpwuid(uid)
            groups = os.getgrouplist(account.pw_name, account.pw_gid)
            await asyncio.to_thread(
                ingest_submission, self.store, manifest, uid, account.pw_gid, groups, self.seen
            )
            augmented = await asyncio.to_thread(self._augment, manifest)
            manifest_id, _size = self.store.ingest_bytes(augmented.manifest.canonical())

            def record(session: Session) -> None:
                record_system_objects(session, augmented.objects)
                recorded = record_submitted_manifest(session, augmented.manifest)
                if key is not None:
                    recorded.program_key = key
                recorded.late_policy = late

            await self.db.write(record)
        except SubmissionError as exc:
            return _error(exc, exc.status)
        except BeolaunchError as exc:
            return _error(exc, 400)
        return web.json_response({"manifest": manifest_id})

    async def learned(self, request: web.Request) -> web.Response:
        """``GET /learned?key=K``: the paths the caller's program K fetched late
        before (``{paths: [...]}``, sorted): beosub ships them ahead."""
        try:
            uid = peer_uid(request)
            key, _late = program_fields({"program_key": request.query.get("key")})
            if key is None:
                raise SubmissionError("key", "expected ?key=PROGRAM_KEY")
            paths = await self.db.read(lambda session: learned_paths(session, uid, key))
        except SubmissionError as exc:
            return _error(exc, exc.status)
        except BeolaunchError as exc:
            return _error(exc, 400)
        return web.json_response({"paths": paths})

    async def acct(self, request: web.Request) -> web.Response:
        """``POST /acct`` ``{command, args}``: a ``beoacct`` table as the caller may
        see it (launcher/acct.py: their own jobs only, unless root)."""
        try:
            uid = peer_uid(request)
            body = await _body(request, ACCT_BODY)
            if not isinstance(body, dict) or not isinstance(body.get("args", {}), dict):
                raise SubmissionError(None, 'expected {"command": NAME, "args": {...}}')
            command, args = str(body.get("command")), body.get("args", {})
            found = await self.db.read(lambda session: acct.table(session, command, args, uid))
        except SubmissionError as exc:
            return _error(exc, exc.status)
        except NotFoundError as exc:
            return _error(exc, 404)
        except BeolaunchError as exc:
            return _error(exc, 400)
        doc = found.document()
        doc["rows"] = [{k: _json(v) for k, v in row.items()} for row in doc["rows"]]
        return web.json_response(doc)

    def _augment(self, manifest: Manifest) -> Augmented:
        """The manifest to store and run: the user's with the master's /etc
        (launcher.master.unixroot), after the user's files were checked."""
        if self.unixroot is None:
            return Augmented(manifest, {})
        return self.unixroot.augment(manifest)

    def _check_quota(self, manifest: Manifest, uid: int) -> None:
        """In a database thread (it reads the state and stats the store)."""
        if self.user_quota_bytes:
            with transaction(self.engine, readonly=True) as session:
                check_quota(session, self.store, manifest, uid, self.user_quota_bytes)

    def _budgets(self) -> list[int]:
        budgets = (view.cache.get("budget") for view in self.registry.views.values())
        return [b for b in budgets if isinstance(b, int) and not isinstance(b, bool)]

    async def _job_for(self, request: web.Request) -> tuple[int, int] | web.Response:
        """(job id, caller uid) when the caller may act on the job, else an error response."""
        job_id = int(request.match_info["id"])
        try:
            uid = peer_uid(request)
        except SubmissionError as exc:
            return _error(exc, exc.status)

        def owner_of(session: Session) -> int | None:
            job = session.get(Job, job_id)
            return job.uid if job is not None else None

        owner = await self.db.read(owner_of)
        if owner is None:
            return web.json_response({"error": f"no job {job_id}"}, status=404)
        if uid not in (0, owner):
            return web.json_response(
                {"error": f"job {job_id} belongs to uid {owner}, not to you (uid {uid})"},
                status=403,
            )
        return job_id, uid

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The job's messages as newline-delimited JSON (chunked), ending with its Done.

        An empty line is a keepalive (every KEEPALIVE_S on an idle job)."""
        found = await self._job_for(request)
        if isinstance(found, web.Response):
            return found
        job_id, _uid = found
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        watched = await self.scheduler.watch(job_id)
        if watched is None or isinstance(watched, Done):
            await resp.write((encode(watched or Done(job_id, 1, "unknown job")) + "\n").encode())
            await resp.write_eof()
            return resp
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        getter: asyncio.Future[Any] | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(watched.get())
                await asyncio.wait(
                    {getter, stopping}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping.done():
                    break
                if not getter.done():
                    await resp.write(b"\n")
                    continue
                batch = [getter.result()]
                getter = None
                while not watched.empty() and not isinstance(batch[-1], Done):
                    batch.append(watched.get_nowait())
                await resp.write("".join(encode(m) + "\n" for m in batch).encode())
                if isinstance(batch[-1], Done):
                    await resp.write_eof()
                    break
        except (ConnectionError, RuntimeError):
            pass  # the watcher went away
        finally:
            stopping.cancel()
            if getter is not None:
                getter.cancel()
            self.scheduler.unwatch(job_id, watched)
        return resp

    async def signal(self, request: web.Request) -> web.Response:
        found = await self._job_for(request)
        if isinstance(found, web.Response):
            return found
        job_id, _uid = found
        try:
            body = await _body(request, MAX_SMALL_BODY)
        except SubmissionError as exc:
            return _error(exc, exc.status)
        signum = body.get("signum") if isinstance(body, dict) else None
        if not isinstance(signum, int) or isinstance(signum, bool) or not 1 <= signum <= 64:
            return web.json_response(
                {"error": f"signum: expected a signal number 1-64, got {signum!r}"}, status=400
            )
        return web.json_response(
            {"job": job_id, "result": await self.scheduler.signal(job_id, signum)}
        )

    async def nodes(self, _request: web.Request) -> web.Response:
        found = await self.db.read(_node_rows)
        rows = []
        for name, state, reason, address, last_seen in found:
            view = self.registry.views.get(name)
            cache = view.cache if view else {}
            # The registry heard the latest heartbeat; the row gets it within a flush.
            if view is not None and view.heard is not None:
                last_seen = max(last_seen, view.heard) if last_seen else view.heard
            rows.append(
                {
                    "name": name,
                    "state": state,
                    "reason": reason,
                    "address": address,
                    "load": view.load if view else None,
                    "memory": view.memory if view else None,
                    "cache_used": cache.get("bytes_used"),
                    "cache_budget": cache.get("budget"),
                    "objects": cache.get("objects"),
                    "pinned": cache.get("pinned"),
                    "last_seen": _json(last_seen),
                }
            )
        return web.json_response(rows)

    async def jobs(self, request: web.Request) -> web.Response:
        finished = request.query.get("all") in ("1", "true", "yes")
        uid = peer_uid(request)
        rows = await self.db.read(lambda session: job_summaries(session, finished=finished))
        for row in rows:
            row["submitted"] = _json(row["submitted"])
            if uid not in (0, row["uid"]):
                row["reason"] = None  # it may name the owner's files (acct.py's rule)
            if self.bytes_served is not None:
                row["bytes_served"] = self.bytes_served(row["job"])
        return web.json_response(rows)

    async def status_link(self, request: web.Request) -> web.Response:
        """``GET /status-login``: ``{url}``, the status page logged in as the caller
        (a short-lived token for the uid the kernel reports: statustoken.py)."""
        try:
            uid = peer_uid(request)
        except SubmissionError as exc:
            return _error(exc, exc.status)
        if self.status_login is None:
            return web.json_response({"error": "this master serves no status page"}, status=404)
        return web.json_response({"url": self.status_login(uid)})

    async def ps(self, _request: web.Request) -> web.Response:
        rows = []
        for name in sorted(self.registry.views):
            for proc in self.registry.views[name].procs:
                # Heartbeats come every 5 s: drop what they still list of jobs
                # that have ended since.
                if proc.get("job") not in self.scheduler.runs:
                    continue
                row: dict[str, Any] = {"node": name}
                for key in ("job", "task", "pid", "user", "state", "cpu", "rss", "cmd"):
                    row[key] = proc.get(key)
                rows.append(row)
        return web.json_response(rows)


def _node_rows(
    session: Session,
) -> list[tuple[str, str, str | None, str | None, datetime | None]]:
    """Each node's (name, state, reason, address, last_seen), as ``list_nodes`` orders them."""
    return [
        (name or "", state, reason, address, seen)
        for name, state, reason, address, seen in node_states(session)
    ]


def _record_submission(
    session: Session, sub: Submission, uid: int, augmented: Augmented, manifest_id: str
) -> int:
    """The job row of a checked submission (and its manifest's); its id."""
    record_system_objects(session, augmented.objects)
    record_submitted_manifest(session, augmented.manifest)
    job = record_job(
        session,
        scheduler="local",
        uid=uid,
        manifest_id=manifest_id,
        name=sub.argv[0].rsplit("/", 1)[-1][:128],
    )
    job.argv = sub.argv
    job.cwd = sub.cwd
    job.environment = sub.env
    job.nodes_requested = sub.nodes
    job.tasks = sub.tasks
    job.batch = sub.batch
    job.stdout_path = sub.output
    job.stderr_path = sub.error
    job.label = sub.label
    job.program_key = sub.program_key
    job.late_policy = sub.late
    session.flush()
    return job.id
