"""The cluster secret stays on the master: a job's capability gets that job's objects,
from the master's object service and from peers, and nothing else (issue 12, item 4).
Real aiohttp services on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from cachefs.cache import NodeCache
from cachefs.dirsource import DirectorySource
from cachefs.manifest import Entry, build
from cachefs.service import BATCH_CONTENT_TYPE, base_url, make_app, serve_app
from cachefs.store import Store
from launcher.master.capability import CapabilityAuthorizer
from launcher.node.peers import PeerTokens, serve_peers

SECRET = "c" * 64


async def _get(url: str, token: str, digest: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/objects/{digest}", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        await r.read()
        return r.status


async def _batch(url: str, token: str, digests: list[str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/objects/batch",
            data=json.dumps({"objects": digests}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": BATCH_CONTENT_TYPE},
        ) as r,
    ):
        await r.read()
        return r.status


@pytest.fixture
def store(tmp_path: Path) -> tuple[Store, str, str, str]:
    store = Store(tmp_path / "store")
    mine, size = store.ingest_bytes(b"the job's library")
    other, _ = store.ingest_bytes(b"another user's 0600 file")
    manifest = build("/lib", [Entry("/lib", "file", 0o644, size, mine)], owner=1000)
    manifest_id, _ = store.ingest_bytes(manifest.canonical())
    return store, manifest_id, mine, other


def test_the_masters_object_service_serves_a_jobs_objects_only(
    store: tuple[Store, str, str, str],
) -> None:
    s, manifest_id, mine, other = store

    async def scenario() -> None:
        authorize = CapabilityAuthorizer(SECRET, s)
        runner = await serve_app(make_app(s, authorize), "127.0.0.1", 0)
        url = base_url(runner)
        try:
            cap = authorize.issue(5, manifest_id)
            assert await _get(url, cap, mine) == 200
            assert await _get(url, cap, other) == 403  # in the store, not in the job
            assert await _batch(url, cap, [mine]) == 200
            assert await _batch(url, cap, [mine, other]) == 403
            assert await _get(url, SECRET, mine) == 401  # the secret opens nothing
            forged = cap[:-1] + ("0" if cap[-1] != "0" else "1")
            assert await _get(url, forged, mine) == 401
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_a_peer_serves_the_capabilities_it_was_given_until_the_job_is_released(
    tmp_path: Path, store: tuple[Store, str, str, str]
) -> None:
    s, manifest_id, mine, other = store

    async def scenario() -> None:
        authorize = CapabilityAuthorizer(SECRET, s)
        with NodeCache(tmp_path / "cache", 1 << 20) as cache:
            source = DirectorySource(s.root)
            await cache.fill({mine: 17, other: 24}, [source])  # both cached on this node
            tokens = PeerTokens()
            runner = await serve_peers(cache, tokens, "127.0.0.1", 0)
            url = base_url(runner)
            try:
                cap = authorize.issue(5, manifest_id)
                assert await _get(url, cap, mine) == 401  # not given yet
                tokens.learn(5, cap, [mine])
                assert await _get(url, cap, mine) == 200
                assert await _get(url, cap, other) == 403
                assert await _batch(url, cap, [other]) == 403
                another = authorize.issue(6, manifest_id)  # a valid cap this node lacks
                assert await _get(url, another, mine) == 401
                tokens.forget(5)
                assert await _get(url, cap, mine) == 401
            finally:
                await runner.cleanup()

    asyncio.run(scenario())
