"""Batch jobs and the event stream, on the real master process (see test_master.py).

Jobs are submitted over the real Unix socket by a real unprivileged process
(uid nobody, through ``setpriv``), so the master must create the output files
as that user; the node agents are the test's fake WebSocket peers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from launcher.errors import MasterError
from launcher.master.client import BlockingClient
from launcher.state.db import transaction
from launcher.state.models import Job
from launcher.wire import (
    MASTER_TO_USER,
    Done,
    Exec,
    Exited,
    Output,
    Prepare,
    Prepared,
    Release,
    encode,
)
from launcher.wire import decode as wire_decode
from tests.integration import test_master
from tests.integration.test_master import (
    FILL,
    ROOT,
    WAIT_S,
    Master,
    _db,
    _manifest,
    _node,
    _recv,
    _start,
    _submit,
    _wait,
    _wait_up,
)

# The master fixtures of test_master.py: a real master process on a copied state dir.
initialized = test_master.initialized
master = test_master.master

NOBODY = 65534
SUBMIT_AS_NOBODY = (
    "import asyncio, json, sys\n"
    "from cachefs.snapshot import snapshot\n"
    "from launcher.errors import MasterError\n"
    "from launcher.master.client import MasterClient\n"
    "sock, cwd, nodes, tasks, opts = sys.argv[1], sys.argv[2], int(sys.argv[3]), "
    "int(sys.argv[4]), json.loads(sys.argv[5])\n"
    "manifest = snapshot('/usr/bin/true', ['/usr/bin/true'], None, owner=65534)\n"
    "try:\n"
    "    job = asyncio.run(MasterClient(sock).submit(argv=['/usr/bin/true'], env={}, cwd=cwd,\n"
    "        nodes=nodes, tasks=tasks, manifest=manifest.document(), batch=True, **opts))\n"
    "except MasterError as exc:\n"
    "    job = str(exc)\n"
    "print(json.dumps(job))\n"
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="submits as nobody through setpriv, as root does"
)


def _home(master: Master) -> Path:
    """A directory of nobody's, where its batch jobs write."""
    home = master.config.state_dir.parent / "nobody"
    home.mkdir(exist_ok=True)
    os.chown(home, NOBODY, NOBODY)
    home.chmod(0o755)
    return home


def _submit_batch(master: Master, cwd: Path, nodes: int, tasks: int, **opts: Any) -> Any:
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    out = subprocess.run(
        [
            *setpriv,
            sys.executable,
            "-c",
            SUBMIT_AS_NOBODY,
            str(master.sock),
            str(cwd),
            str(nodes),
            str(tasks),
            json.dumps(opts),
        ],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=WAIT_S,
    )
    return json.loads(out.stdout)


def _content(path: Path, want: bytes) -> bool:
    try:
        return path.read_bytes() == want
    except FileNotFoundError:
        return False


def test_batch_files_are_created_as_the_user_per_node_and_task(master: Master) -> None:
    home = _home(master)

    async def go() -> tuple[int, dict[str, Exec]]:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")
            n2 = await _node(master, session, "node2")
            await asyncio.to_thread(_wait_up, master, "node1", "node2")
            job = await asyncio.to_thread(
                _submit_batch, master, home, 2, 3, output="out-%j-%n-%2t.txt"
            )
            assert isinstance(job, int), job
            await _recv(n1, Prepare)
            await _recv(n2, Prepare)
            await n1.send_str(encode(Prepared(job, True, None, FILL)))
            await n2.send_str(encode(Prepared(job, True, None, FILL)))
            execs = {"node1": await _recv(n1, Exec), "node2": await _recv(n2, Exec)}
            # Opened (created) before any task was told to start.
            assert sorted(p.name for p in home.iterdir()) == [
                f"out-{job}-node1-00.txt",
                f"out-{job}-node1-02.txt",
                f"out-{job}-node2-01.txt",
            ]
            await n1.send_str(encode(Output.of(job, 0, "stdout", b"zero\n")))
            await n1.send_str(encode(Output.of(job, 0, "stderr", b"zero on stderr\n")))
            await n2.send_str(encode(Output.of(job, 1, "stdout", b"one\n")))
            await n1.send_str(encode(Output.of(job, 2, "stdout", b"two, no newline")))
            for ws, task in ((n1, 0), (n2, 1), (n1, 2)):
                await ws.send_str(encode(Exited(job, task, 0, None, {})))
            assert (await _recv(n1, Release)).job == job
            await n1.close()
            await n2.close()
            return job, execs

    job, execs = asyncio.run(go())
    assert execs["node1"].tasks[0]["uid"] == NOBODY
    want = {
        f"out-{job}-node1-00.txt": b"zero\nzero on stderr\n",
        f"out-{job}-node2-01.txt": b"one\n",
        f"out-{job}-node1-02.txt": b"two, no newline",
    }
    for name, content in want.items():
        _wait(lambda n=name, c=content: _content(home / n, c), f"{name} written")  # type: ignore[misc]
        st = (home / name).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY, NOBODY, 0o644)
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        row = session.get_one(Job, job)
        assert (row.batch, row.stdout_path, row.stderr_path) == (
            True,
            f"{home}/out-%j-%n-%2t.txt",
            None,
        )
        assert (row.state, row.exit_status) == ("completed", 0)
    engine.dispose()
    # Listed like any job.
    jobs = asyncio.run(master.client().jobs(all_jobs=True))
    assert [r["job"] for r in jobs if r["job"] == job] == [job]


def test_stderr_to_its_own_file_with_labels_and_the_failure_reason(master: Master) -> None:
    home = _home(master)

    async def go() -> int:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")
            await asyncio.to_thread(_wait_up, master, "node1")
            job = await asyncio.to_thread(
                _submit_batch, master, home, 1, 1, output="o.txt", error="e-%x.txt", label=True
            )
            await _recv(n1, Prepare)
            await n1.send_str(encode(Prepared(job, True, None, FILL)))
            await _recv(n1, Exec)
            await n1.send_str(encode(Output.of(job, 0, "stdout", b"a\nb")))
            await n1.send_str(encode(Output.of(job, 0, "stdout", b"c\n")))
            await n1.send_str(encode(Output.of(job, 0, "stderr", b"oops")))
            await n1.send_str(encode(Exited(job, 0, 4, None, {})))
            assert (await _recv(n1, Release)).job == job
            await n1.close()
            return job

    asyncio.run(go())
    _wait(lambda: _content(home / "o.txt", b"node1.0: a\nnode1.0: bc\n"), "o.txt written")
    _wait(lambda: _content(home / "e-true.txt", b"node1.0: oops\n"), "e-true.txt written")


def test_a_symlink_planted_at_the_output_path_is_refused_and_nothing_runs(
    master: Master,
) -> None:
    home = _home(master)
    target = master.config.state_dir.parent / "root-owned"
    target.write_bytes(b"precious\n")
    (home / "out.txt").symlink_to(target)

    async def go() -> tuple[int, list[Any]]:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")
            await asyncio.to_thread(_wait_up, master, "node1")
            job = await asyncio.to_thread(_submit_batch, master, home, 1, 1, output="out.txt")
            await _recv(n1, Prepare)
            await n1.send_str(encode(Prepared(job, True, None, FILL)))
            # The next message is the release: no exec ever came.
            assert (await _recv(n1, Release)).job == job
            seen = [m async for m in master.client().stream(job)]
            await n1.close()
            return job, seen

    job, seen = asyncio.run(go())
    done = seen[-1]
    assert isinstance(done, Done) and done.status == 1
    assert done.reason is not None
    assert f"{home}/out.txt" in done.reason and "symbolic link" in done.reason
    assert target.read_bytes() == b"precious\n"
    assert (home / "out.txt").is_symlink()
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        row = session.get_one(Job, job)
        assert (row.state, row.started_at) == ("failed", None)
    engine.dispose()


def test_a_bad_pattern_or_output_without_batch_is_refused_at_submission(master: Master) -> None:
    home = _home(master)
    answer = _submit_batch(master, home, 1, 1, output="out-%q.txt")
    assert isinstance(answer, str) and "%q" in answer and "output" in answer


def test_after_a_master_restart_output_goes_on_to_the_same_file(master: Master) -> None:
    home = _home(master)
    log = home / "log-node1.txt"

    async def before() -> int:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")
            await asyncio.to_thread(_wait_up, master, "node1")
            job = await asyncio.to_thread(
                _submit_batch, master, home, 1, 1, output="log-%n.txt", label=True
            )
            await _recv(n1, Prepare)
            await n1.send_str(encode(Prepared(job, True, None, FILL)))
            await _recv(n1, Exec)
            await n1.send_str(encode(Output.of(job, 0, "stdout", b"before\n")))
            await asyncio.to_thread(
                _wait, lambda: _content(log, b"node1.0: before\n"), "the first line"
            )
            master.proc.kill()  # SIGKILL: no cleanup
            master.proc.wait()
            await n1.receive(timeout=WAIT_S)
            return job

    job = asyncio.run(before())
    master.proc = _start(master.config)

    async def after() -> None:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")  # the task still runs: nothing held
            await n1.send_str(encode(Output.of(job, 0, "stdout", b"after\n")))
            await n1.send_str(encode(Exited(job, 0, 0, None, {})))
            assert (await _recv(n1, Release)).job == job
            await n1.close()

    asyncio.run(after())
    _wait(lambda: _content(log, b"node1.0: before\nnode1.0: after\n"), "the line after restart")
    assert log.stat().st_uid == NOBODY


def test_a_job_the_master_was_preparing_when_it_died_says_so_in_its_file_and_listing(
    master: Master,
) -> None:
    """Before: the job ended "failed" at the restart with nothing in its output file,
    and ``beostat jobs`` showed no reason."""
    home = _home(master)
    log = home / "prep.txt"

    async def before() -> int:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")
            await asyncio.to_thread(_wait_up, master, "node1")
            job = await asyncio.to_thread(_submit_batch, master, home, 1, 1, output="prep.txt")
            await _recv(n1, Prepare)  # and never answers: the master dies meanwhile
            master.proc.kill()
            master.proc.wait()
            await n1.receive(timeout=WAIT_S)
            return job

    job = asyncio.run(before())
    master.proc = _start(master.config)
    said = f"beolaunch: job {job}: the master restarted while the job was being prepared"
    _wait(lambda: log.exists() and said.encode() in log.read_bytes(), "the reason in the file")
    assert log.stat().st_uid == NOBODY  # written as the user, through the opener
    rows = asyncio.run(master.client().jobs(all_jobs=True))
    row = next(r for r in rows if r["job"] == job)
    assert row["state"] == "failed"
    assert "the master restarted while the job was being prepared" in row["reason"]


# --- the event stream ------------------------------------------------------------


def _raw_get(sock_path: Path, path: str) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 GET over the Unix socket: status line, headers, raw (still chunked) body."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(WAIT_S)
        s.connect(str(sock_path))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, body = out + body[:size], body[size + 2 :]


def test_events_is_a_chunked_stream_of_ndjson_wire_messages(master: Master) -> None:
    job = asyncio.run(_submit(master, _manifest(master, owner=0), nodes=1, tasks=1))
    assert asyncio.run(master.client().signal(job, signal.SIGTERM)) == "cancelled"
    status, headers, body = _raw_get(master.sock, f"/jobs/{job}/events")
    assert status.split()[1] == "200"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"].startswith("application/x-ndjson")
    lines = [line for line in _dechunk(body).split(b"\n") if line]
    assert [wire_decode(line, MASTER_TO_USER) for line in lines] == [
        Done(job, 128 + signal.SIGTERM, f"cancelled by signal {signal.SIGTERM}")
    ]
    status, _headers, body = _raw_get(master.sock, "/jobs/999999/events")
    assert status.split()[1] == "404"
    assert b"no job 999999" in body


def test_events_streams_output_live_and_ends_with_done(master: Master) -> None:
    manifest = _manifest(master, owner=0)

    async def go() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            n1 = await _node(master, session, "node1")
            await asyncio.to_thread(_wait_up, master, "node1")
            job = await _submit(master, manifest, nodes=1, tasks=1)
            seen: list[Any] = []
            got_output = asyncio.Event()

            async def watch() -> None:
                async for message in master.client().stream(job):
                    seen.append(message)
                    if isinstance(message, Output):
                        got_output.set()

            watcher = asyncio.create_task(watch())
            await _recv(n1, Prepare)
            await n1.send_str(encode(Prepared(job, True, None, FILL)))
            await _recv(n1, Exec)
            await n1.send_str(encode(Output.of(job, 0, "stdout", b"x" * 200_000 + b"\n")))
            # Output reaches the watcher while the job still runs.
            await asyncio.wait_for(got_output.wait(), WAIT_S)
            await n1.send_str(encode(Exited(job, 0, 0, None, {})))
            await asyncio.wait_for(watcher, WAIT_S)
            await n1.close()
            return seen

    seen = asyncio.run(go())
    outputs = [m for m in seen if isinstance(m, Output)]
    assert [o.payload() for o in outputs] == [b"x" * 200_000 + b"\n"]
    assert isinstance(seen[-1], Done) and seen[-1].status == 0


def test_the_blocking_client_streams_signals_and_names_refusals(master: Master) -> None:
    job = asyncio.run(_submit(master, _manifest(master, owner=0), nodes=1, tasks=1))
    client = BlockingClient(master.sock)
    assert client.signal(job, signal.SIGINT) == "cancelled"
    assert list(client.stream(job)) == [
        Done(job, 128 + signal.SIGINT, f"cancelled by signal {signal.SIGINT}")
    ]
    with pytest.raises(MasterError) as caught:
        list(client.stream(999999))
    assert caught.value.status == 404 and "no job 999999" in str(caught.value)
    with pytest.raises(MasterError) as caught:
        BlockingClient(master.sock.with_name("nothing.sock")).signal(job, 15)
    assert caught.value.status is None and "cannot connect" in str(caught.value)
