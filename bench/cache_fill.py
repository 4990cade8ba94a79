"""Filling an empty node cache from the object service, against curl.

The closure is python3 and its standard library (``/usr/lib/python3.11``),
snapshotted into a store. The object service runs in its own process on
127.0.0.1. Figure: an empty NodeCache on tmpfs (a node's default) filled
through HttpSource: batched small objects, GET for large ones, every byte
hashed, fsynced and renamed into place. Baseline: one curl process fetching the
same objects one by one over one keep-alive connection (``curl -K``), into
tmpfs, verifying nothing. Median of 3 rounds each, same run. Goal: at least as
fast as curl.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.record import report
from cachefs.cache import NodeCache
from cachefs.client import HttpSource
from cachefs.closure import resolve
from cachefs.snapshot import snapshot
from cachefs.store import Store

ROUNDS = 3
TMPFS = Path("/dev/shm")
SERVER = """
import asyncio, sys
from pathlib import Path
from cachefs.service import base_url, secret_token_check, serve
from cachefs.store import Store

async def main() -> None:
    runner = await serve(Store(Path(sys.argv[1])), secret_token_check(sys.argv[2]))
    print(base_url(runner), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def fill_seconds(url: str, token: str, objects: dict[str, int], where: Path) -> float:
    async def fill() -> float:
        with NodeCache(where, budget_bytes=2**34) as cache:
            start = time.perf_counter()
            report = await cache.fill(objects, [HttpSource(url, token)])
            seconds = time.perf_counter() - start
        assert report.objects_hit == 0 and report.objects_total == len(objects)
        return seconds

    return asyncio.run(fill())


def curl_seconds(url: str, token: str, objects: dict[str, int], where: Path) -> float:
    config = where / "curl.conf"
    with config.open("w") as f:
        f.write(f'header = "Authorization: Bearer {token}"\nfail\nsilent\n')
        for sha in objects:
            f.write(f'url = "{url}/objects/{sha}"\noutput = "{where / sha}"\n')
    start = time.perf_counter()
    subprocess.run(["curl", "-K", str(config)], check=True)
    seconds = time.perf_counter() - start
    assert sum((where / sha).stat().st_size for sha in objects) == sum(objects.values())
    return seconds


def main() -> None:
    if shutil.which("curl") is None:
        sys.exit("bench.cache_fill: curl is not installed (make bench installs it)")
    base = Path(tempfile.mkdtemp(prefix="beo-bench-"))
    scratch = Path(tempfile.mkdtemp(prefix="beo-fill-", dir=TMPFS if TMPFS.is_dir() else None))
    server: subprocess.Popen[str] | None = None
    try:
        store = Store(base / "store")
        found = resolve(
            "/usr/bin/python3", env={"PATH": "/usr/bin:/bin"}, includes=["/usr/lib/python3.11"]
        )
        objects = snapshot(found.root, found.paths, store).objects()
        token = secrets.token_hex(32)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(base / "store"), token],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        ours, theirs = [], []
        for r in range(ROUNDS + 1):  # round 0 warms the server's page cache
            cache_dir, curl_dir = scratch / f"cache{r}", scratch / f"curl{r}"
            curl_dir.mkdir()
            a = fill_seconds(url, token, objects, cache_dir)
            b = curl_seconds(url, token, objects, curl_dir)
            shutil.rmtree(cache_dir)
            shutil.rmtree(curl_dir)
            if r:
                ours.append(a)
                theirs.append(b)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    size_mib = sum(objects.values()) / 2**20
    print(f"cache_fill: {len(objects)} objects, {size_mib:.1f} MiB")
    report(
        "cache_fill_python3_stdlib_loopback",
        statistics.median(ours),
        statistics.median(theirs),
        "s",
        "at least as fast as curl one by one (ratio >= 1)",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
