"""The status page's HTML pages: the cluster (``/``), a node, a job.

``/`` draws the feed's latest snapshot (statusfeed.py), then status.js keeps it
live from ``/events``. A node's page and a job's page read the database once
per load, in a database thread. Who sees what (statusauth.py): every logged-in
user the grid, the running jobs and a node's summary; a node's boot log and
cache contents root only (object digests are root's to know: docs/security.md);
a job's page its owner and root, anyone else 403.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping

from aiohttp import web

from launcher.master import statushtml as h
from launcher.master.dbwork import DbWork
from launcher.master.jobs import JobRun
from launcher.master.statusauth import StatusAuth, refusal
from launcher.master.statusfeed import StatusFeed
from launcher.master.statusqueries import PAGE_ROWS, JobPage, job_owner, job_page, node_page
from launcher.wire import Output

#: Bytes of a job's output its page shows (the newest, from the master's memory).
OUTPUT_TAIL_BYTES = 16 << 10
#: A node name in a path (hostname labels) and a job id (fits 64 bits).
NODE_NAME = "{name:[A-Za-z0-9][A-Za-z0-9-]{0,62}}"
JOB_ID = "{id:[0-9]{1,18}}"


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


class StatusPages:
    def __init__(
        self,
        auth: StatusAuth,
        feed: StatusFeed,
        db: DbWork,
        runs: Callable[[], Mapping[int, JobRun]],
    ) -> None:
        self.auth = auth
        self.feed = feed
        self.db = db
        self.runs = runs

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index),
            web.get(f"/nodes/{NODE_NAME}", self.node),
            web.get(f"/jobs/{JOB_ID}", self.job),
        ]

    async def index(self, request: web.Request) -> web.Response:
        viewer = self.auth.viewer(request)
        if isinstance(viewer, web.Response):
            return viewer
        snap = json.loads(await self.feed.current())
        body = (
            "<h2>Nodes <small id='at'>" + h.e(snap["at"]) + "</small></h2>"
            f"<div id='grid' class='grid'>{h.grid(snap['nodes'])}</div>"
            f"<h2>Running jobs</h2><div id='jobs'>{h.jobs(snap['jobs'], viewer.uid)}</div>"
        )
        return _html(h.document("Beolaunch cluster", body, uid=viewer.uid))

    async def node(self, request: web.Request) -> web.Response:
        viewer = self.auth.viewer(request)
        if isinstance(viewer, web.Response):
            return viewer
        name = request.match_info["name"]
        page = await self.db.read(lambda session: node_page(session, name))
        if page is None:
            return refusal(404, "No such node", f"no node named {name}")
        facts = h.table(
            ("state", "reason", "address", "last seen"),
            [(page.state, page.reason or "", page.address or "", h.when(page.last_seen))],
        )
        body = f"<h2>Node {h.e(page.name)}</h2>{facts}"
        if viewer.admin:
            log = h.table(
                ("time", "level", "message"),
                ((h.when(t), level, msg) for t, level, msg in page.log),
            )
            cache = h.table(
                ("object", "size", "cached", "last used"),
                ((sha, h.size(n), h.when(c), h.when(u)) for sha, n, c, u in page.cache),
            )
            body += (
                f"<h3>Boot log and events <small>newest {PAGE_ROWS} first</small></h3>{log}"
                f"<h3>Cache <small>{page.cache_count} objects</small></h3>{cache}"
            )
        else:
            body += "<p class='refused'>A node's boot log and cache contents are for root.</p>"
        return _html(h.document(f"node {page.name}", body, uid=viewer.uid))

    async def job(self, request: web.Request) -> web.Response:
        viewer = self.auth.viewer(request)
        if isinstance(viewer, web.Response):
            return viewer
        job_id = int(request.match_info["id"])
        owner = await self.db.read(lambda session: job_owner(session, job_id))
        if owner is None:
            return refusal(404, "No such job", f"no job {job_id}")
        if not viewer.may_see_job(owner):
            return refusal(
                403,
                "Not your job",
                f"job {job_id} belongs to uid {owner}, not to you (uid {viewer.uid})",
            )
        page = await self.db.read(lambda session: job_page(session, job_id))
        if page is None:
            return refusal(404, "No such job", f"no job {job_id}")
        return _html(h.document(f"job {job_id}", self._job_body(page), uid=viewer.uid))

    def _job_body(self, page: JobPage) -> str:
        facts = h.table(
            ("state", "exit", "command", "submitted", "started", "ended", "reason"),
            [
                (
                    page.state,
                    "" if page.exit_status is None else page.exit_status,
                    " ".join(page.argv or []),
                    h.when(page.submitted),
                    h.when(page.started),
                    h.when(page.ended),
                    page.reason or "",
                )
            ],
        )
        fills = h.table(
            (
                "node",
                "objects",
                "cache hits",
                "bytes",
                "from master",
                "from peers",
                "fill s",
                "exit",
            ),
            (
                (
                    n["name"],
                    n["objects_total"],
                    n["objects_hit"],
                    h.size(n["bytes_total"]),
                    h.size(n["bytes_from_master"]),
                    h.size(n["bytes_from_peers"]),
                    "" if n["fill_seconds"] is None else f"{n['fill_seconds']:.2f}",
                    n["refused"]
                    or n["lost"]
                    or ("" if n["exit_status"] is None else n["exit_status"]),
                )
                for n in page.nodes
            ),
        )
        late = (
            h.table(
                ("path", "node", "size", "fetched"),
                ((p, node or "", h.size(n), h.when(t)) for p, node, n, t in page.late),
            )
            if page.late
            else "<p class='empty'>no file came late</p>"
        )
        entries = h.table(
            ("path", "kind", "mode", "size", "object or target"),
            ((p, k, f"{m:04o}", h.size(n), x or "") for p, k, m, n, x in page.entries),
        )
        shown = f"first {len(page.entries)} of " if page.entry_count > len(page.entries) else ""
        return (
            f"<h2>Job {page.job} <small>{h.e(page.name)}, uid {page.uid}</small></h2>{facts}"
            f"<h3>Fill per node <small>where its files came from</small></h3>{fills}"
            f"<h3>Files that came late</h3>{late}"
            f"<h3>Output <small>the newest {h.size(OUTPUT_TAIL_BYTES)}, "
            "while the master holds it</small></h3>"
            f"<pre class='output'>{h.e(self._output_tail(page.job))}</pre>"
            f"<h3>Manifest <small>{shown}{page.entry_count} entries, "
            f"id {h.e(page.manifest_id)}</small></h3>{entries}"
        )

    def _output_tail(self, job_id: int) -> str:
        run = self.runs().get(job_id)
        if run is None:
            return "(not held: the job is not running here)"
        chunks = [base64.b64decode(m.data) for m in run.history.replay() if isinstance(m, Output)]
        tail = b"".join(chunks)[-OUTPUT_TAIL_BYTES:]
        return tail.decode("utf-8", "replace") or "(no output yet)"
