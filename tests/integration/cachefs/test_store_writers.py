"""cachefs.store against a real concurrent writer process: never a wrong record."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cachefs
from cachefs.errors import SourceChangedError
from cachefs.store import Store

REPO = Path(cachefs.__file__).resolve().parent.parent

BASE = 8 << 20
HEAD = 65536
# Round n rewrites the first 64 KiB in place with the byte n % 251, then appends
# one "+": every consistent state has a uniform head whose byte is c % 251 or
# (c + 1) % 251, c being the number of "+" after BASE bytes.
WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
base, head = int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
n = 0
while True:
    n += 1
    os.pwrite(fd, bytes([n % 251]) * head, 0)
    os.pwrite(fd, b"+", base + n - 1)
"""


def consistent(data: bytes) -> bool:
    head, tail = data[:HEAD], data[BASE:]
    c = len(tail)
    return (
        len(set(head)) == 1
        and tail == b"+" * c
        and head[0] in (c % 251, (c + 1) % 251)
        and data[HEAD:BASE] == bytes(BASE - HEAD)
    )


@pytest.mark.parametrize("attempts", [1, 3])
def test_ingest_while_another_process_writes(tmp_path: Path, attempts: int) -> None:
    src = tmp_path / "busy.so"
    src.write_bytes(bytes(BASE))
    store = Store(tmp_path / "store")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(src), str(BASE), str(HEAD)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(0.05)  # let it write a while: this is not a timing assertion
        outcome: tuple[str, int] | None
        try:
            outcome = store.ingest(src, attempts=attempts)
        except SourceChangedError as exc:
            assert exc.attempts == attempts
            outcome = None
    finally:
        writer.kill()
        writer.wait()
    objects = list(store.objects())
    if outcome is None:
        assert objects == []
    else:
        # Recorded only if the bytes were one state the file was in, under their digest.
        digest, size = outcome
        assert objects == [(digest, size)]
        data = store.path(digest).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        assert consistent(data)
    assert list((store.root / "tmp").iterdir()) == []


# Ingests argv[2] into the store at argv[1], pausing after each chunk so the
# test can kill it mid-copy.
INGESTER = r"""
import os, sys, time
from pathlib import Path
from cachefs import store as store_module
real_readv = os.readv
def slow_readv(fd, buffers):
    n = real_readv(fd, buffers)
    time.sleep(0.05)
    return n
store_module.os.readv = slow_readv
store_module.Store(Path(sys.argv[1])).ingest(Path(sys.argv[2]))
"""


def test_killed_mid_ingest_leaves_no_object_and_reopen_cleans(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(b"x" * (64 << 20))
    root = tmp_path / "store"
    Store(root)
    child = subprocess.Popen(
        [sys.executable, "-c", INGESTER, str(root), str(src)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        part = None
        while part is None:  # wait for the tmp file to hold a chunk
            assert child.poll() is None, "the ingest finished before it could be killed"
            parts = [p for p in (root / "tmp").iterdir() if p.stat().st_size > 0]
            part = parts[0] if parts else None
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert part.exists()  # the crash left a partial write...
    assert list(Store(root).objects()) == []  # ...never visible as an object
    assert list((root / "tmp").iterdir()) == []  # and reopening cleaned it
