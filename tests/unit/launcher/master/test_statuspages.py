"""The status service's pages over HTTP, against a real database: no login, no page;
a job's page for its owner and root only (403 for anyone else); a node's cache
contents for root only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine

from cachefs.manifest import Entry, build
from launcher.master.dbwork import DbWork
from launcher.master.statusauth import COOKIE, StatusAuth
from launcher.master.statusevents import StatusEvents
from launcher.master.statusfeed import StatusFeed
from launcher.master.statuspages import StatusPages
from launcher.master.statustoken import issue
from launcher.master.statusweb import status_app
from launcher.state.db import transaction
from launcher.state.nodes import add_node
from launcher.state.record import record_job, record_submitted_manifest

SECRET = "ef" * 32
OWNER = 4242
OTHER = 4343
DIGEST = "a" * 64


def _seed(engine: Engine) -> int:
    manifest = build("/bin/prog", [Entry("/bin/prog", "file", 0o755, 5, DIGEST)], owner=OWNER)
    with transaction(engine) as session:
        add_node(session, "n0", state="up")
        record_submitted_manifest(session, manifest)
        job = record_job(session, scheduler="local", uid=OWNER, manifest_id=manifest.id)
        session.flush()
        return job.id


def _serve(engine: Engine, test: Callable[[TestClient[Any, Any], int], Awaitable[None]]) -> None:
    job_id = _seed(engine)

    async def main() -> None:
        db = DbWork(engine)
        auth = StatusAuth(SECRET)
        feed = StatusFeed(db, {}, dict)
        pages = StatusPages(auth, feed, db, dict)
        app = status_app(auth.routes(), pages.routes(), StatusEvents(auth, feed).routes())
        async with TestClient(TestServer(app)) as client:
            await test(client, job_id)
        await db.close()

    asyncio.run(main())


async def _login(client: TestClient[Any, Any], uid: int) -> None:
    resp = await client.get(f"/login?token={issue(SECRET, uid)}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"


def test_without_a_login_every_page_says_how_to_get_one(engine: Engine) -> None:
    async def test(client: TestClient[Any, Any], job_id: int) -> None:
        for path in ("/", f"/jobs/{job_id}", "/nodes/n0", "/events"):
            resp = await client.get(path)
            assert resp.status == 401, path
            assert "beostat web" in await resp.text()
        resp = await client.get("/login?token=1.2.forged")
        assert resp.status == 401

    _serve(engine, test)


def test_the_grid_shows_the_nodes(engine: Engine) -> None:
    async def test(client: TestClient[Any, Any], _job_id: int) -> None:
        await _login(client, OTHER)
        resp = await client.get("/")
        text = await resp.text()
        assert resp.status == 200
        assert "data-node='n0'" in text and "tile up" in text
        assert "script-src" not in resp.headers["Content-Security-Policy"]
        assert (await client.get("/static/status.js")).status == 200

    _serve(engine, test)


def test_a_job_page_is_its_owners_and_roots_only(engine: Engine) -> None:
    async def test(client: TestClient[Any, Any], job_id: int) -> None:
        await _login(client, OTHER)
        resp = await client.get(f"/jobs/{job_id}")
        assert resp.status == 403
        text = await resp.text()
        assert f"uid {OWNER}" in text and "/bin/prog" not in text
        for uid in (OWNER, 0):
            client.session.cookie_jar.clear()
            await _login(client, uid)
            resp = await client.get(f"/jobs/{job_id}")
            assert resp.status == 200, uid
            assert "/bin/prog" in await resp.text()
        assert (await client.get("/jobs/99999")).status == 404

    _serve(engine, test)


def test_a_nodes_cache_contents_are_roots_only(engine: Engine) -> None:
    async def test(client: TestClient[Any, Any], _job_id: int) -> None:
        await _login(client, OWNER)
        text = await (await client.get("/nodes/n0")).text()
        assert "for root" in text and "Boot log" not in text
        client.session.cookie_jar.clear()
        await _login(client, 0)
        text = await (await client.get("/nodes/n0")).text()
        assert "Boot log" in text and "Cache" in text
        assert (await client.get("/nodes/nosuch")).status == 404

    _serve(engine, test)
