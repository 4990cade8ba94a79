"""The hooks' C client against the Python hook, the reference: the same bytes.

The client is compiled here with the system ``cc`` (:func:`launcher.slurm.
hookclient.build`), then each case runs the Python hook (``launcher.slurm.hook.
main``, the code the wrapper ran before) and the C client, a real process, with
the same slurmd-like environment against the same real Unix socket server, and
compares what each sent (the request line, byte for byte), what it printed on
stderr and its exit code. Two servers: the agent's own (``launcher.node.local.
serve_local`` with a scripted handler: accepted, refused, an error) and a
plain one that records the raw request line and answers scripted bytes (odd
answers the agent never sends but a client must survive the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from launcher.cli import beoctl
from launcher.errors import BeolaunchError
from launcher.node.local import serve_local
from launcher.slurm import hook, hookclient

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")

MANIFEST = "0123456789abcdef" * 4
TIMEOUT = 20  # [slurm] prolog_timeout of the test config


class RawServer:
    """A Unix socket server that records each request line and answers ``reply``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reply = b""
        self.seen: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.seen.append(data)
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


class Handler:
    """The agent's handler, scripted by Slurm job id: 1 admits, 2 refuses, 3 fails."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def admit(self, req: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(req)
        if req["slurm_job"] == 2:
            return {"accepted": False, "reason": "sha256 mismatch for /lib/libü.so"}
        if req["slurm_job"] == 3:
            raise BeolaunchError("master not connected")
        return {"accepted": True, "job": 41, "root": "/r"}

    async def release(self, req: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(req)
        return {"released": req["slurm_job"] == 1}

    def root(self, req: dict[str, Any], uid: int) -> dict[str, Any]:
        raise BeolaunchError("not asked here")


@dataclass
class Rig:
    dir: Path
    config: Path
    client: Path
    raw: RawServer
    handler: Handler
    seen_by_agent: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    top = tmp_path_factory.mktemp("hookclient")
    state = top / "state"
    assert beoctl.main(["init", "--state-dir", str(state)]) == 0
    config = state / "config.toml"
    sockets = top / "s"
    sockets.mkdir()
    config.write_text(
        config.read_text()
        + f'\n[slurm]\nagent_socket = "{sockets}/%n.sock"\nprolog_timeout = {TIMEOUT}\n'
    )
    client = hookclient.build(top / "hooks")
    assert client is not None
    raw = RawServer(sockets / "raw.sock")
    handler = Handler()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(serve_local(sockets / "agent.sock", handler))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Rig(top, config, client, raw, handler)
    finally:
        raw.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def _python(
    rig: Rig, stage: str, env: dict[str, bytes], capfd: pytest.CaptureFixture[str]
) -> tuple[int, bytes]:
    """The reference: the Python hook in this process with exactly ``env``."""
    saved = dict(os.environb)
    capfd.readouterr()
    try:
        os.environb.clear()
        os.environb.update(env)
        code = hook.main(["--config", str(rig.config), "slurm", stage])
    finally:
        os.environb.clear()
        os.environb.update(saved)
    err = capfd.readouterr().err
    return code, err.encode("utf-8", "surrogateescape")


def _c(rig: Rig, stage: str, env: dict[str, bytes]) -> tuple[int, bytes]:
    pattern = str(rig.dir / "s" / "%n.sock")
    done = subprocess.run(
        [str(rig.client), stage, pattern, str(TIMEOUT)], env=env, capture_output=True, timeout=60
    )
    assert done.stdout == b""
    return done.returncode, done.stderr


def _both(
    rig: Rig, stage: str, env: dict[str, str | bytes], capfd: pytest.CaptureFixture[str]
) -> tuple[tuple[int, bytes], list[Any]]:
    """Run both; assert they sent and answered the same. The shared outcome and requests."""
    benv = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in env.items()}
    rig.raw.seen.clear()
    rig.handler.seen.clear()
    py = _python(rig, stage, benv, capfd)
    py_sent = list(rig.raw.seen) + list(rig.handler.seen)
    rig.raw.seen.clear()
    rig.handler.seen.clear()
    c = _c(rig, stage, benv)
    c_sent = list(rig.raw.seen) + list(rig.handler.seen)
    assert c_sent == py_sent
    assert c == py, f"C {c!r} vs Python {py!r}"
    return py, py_sent


def _prolog_env(node: str = "raw", **more: str | bytes) -> dict[str, str | bytes]:
    env: dict[str, str | bytes] = {
        "SLURM_JOB_COMMENT": f"beolaunch:manifest={MANIFEST}",
        "SLURMD_NODENAME": node,
        "SLURM_JOB_ID": "1",
        "SLURM_JOB_UID": "1000",
        "SLURM_JOB_GID": "1001",
        "SLURM_JOB_USER": "ann",
        "SLURM_JOB_WORK_DIR": "/home/ann",
        "SLURM_NODELIST": "node[1-2,10],gpu07",
    }
    env.update(more)
    return {k: v for k, v in env.items() if v != "<unset>"}


ACCEPTED = b'{"ok":true,"accepted":true,"job":41}\n'

PROLOG_REQUESTS = [
    {},
    {
        "SLURM_JOB_USER": 'ä"\\\n\t\x01\x7f😀 x',
        "SLURM_JOB_WORK_DIR": b"/home/\xff\xc3(\xed\xa0\x80",
    },
    {"SLURM_JOB_WORK_DIR": "<unset>", "SLURM_JOB_UID": "0012", "SLURM_JOB_ID": "00"},
    {"SLURM_JOB_WORK_DIR": ""},
    {"SLURM_NODELIST": "node[a-b]"},
    {"SLURM_NODELIST": "(null)"},
    {"SLURM_NODELIST": "  n[3-1],m  "},
    {"SLURM_NODELIST": "a[1-2]b[3-4],c,,c"},
    {"SLURM_NODELIST": "x[1-3"},
    {"SLURM_NODELIST": "[1-2]"},
    {"SLURM_NODELIST": "n[001-003,5-],n002"},
    {"SLURM_NODELIST": "n[1,]"},
    {"SLURM_NODELIST": "n[9-11-12]"},
    {"SLURM_NODELIST": "<unset>", "SLURM_JOB_NODELIST": "b,a"},
    {"SLURM_NODELIST": "<unset>"},
    {"SLURM_JOB_COMMENT": f"x beolaunch:manifest={MANIFEST}0 beolaunch:manifest={MANIFEST}:y"},
]


@pytest.mark.parametrize("more", PROLOG_REQUESTS)
def test_the_prolog_sends_the_same_admit_bytes(
    rig: Rig, more: dict[str, str | bytes], capfd: pytest.CaptureFixture[str]
) -> None:
    rig.raw.reply = ACCEPTED
    outcome, sent = _both(rig, "prolog", _prolog_env(**more), capfd)
    assert outcome == (0, b"")
    assert len(sent) == 1 and sent[0].startswith(b'{"op":"admit",')


@pytest.mark.parametrize(
    "more",
    [
        {"SLURM_JOB_COMMENT": "<unset>"},
        {"SLURM_JOB_COMMENT": "beolaunch:manifest=abc"},
        {"SLURM_JOB_COMMENT": f"beolaunch:manifest={MANIFEST.upper()}"},
    ],
)
def test_a_job_without_a_manifest_contacts_nobody(
    rig: Rig, more: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    for stage in ("prolog", "epilog"):
        outcome, sent = _both(rig, stage, _prolog_env(**more), capfd)
        assert outcome == (0, b"") and sent == []


@pytest.mark.parametrize(
    "more",
    [
        {"SLURMD_NODENAME": "<unset>"},
        {"SLURMD_NODENAME": ""},
        {"SLURM_JOB_ID": "<unset>"},
        {"SLURM_JOB_ID": "12a"},
        {"SLURM_JOB_UID": ""},
        {"SLURM_JOB_GID": "it's"},
        {"SLURM_JOB_USER": ""},
        {"SLURM_JOB_USER": "<unset>"},
        {"SLURMD_NODENAME": "nothere"},  # no socket: the errno's text
    ],
)
def test_a_bad_environment_fails_alike(
    rig: Rig, more: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    outcome, sent = _both(rig, "prolog", _prolog_env(**more), capfd)
    assert outcome[0] == 1 and outcome[1].startswith(b"beoctl: ")
    assert sent == []


@pytest.mark.parametrize(
    "reply",
    [
        b'{"ok":true,"accepted":false,"reason":"disk \\u00fc \\ud83d\\ude00 \\"full\\""}\n',
        b'{"ok":true,"accepted":false}\n',
        b'{"ok":true,"accepted":false,"reason":""}\n',
        b'{"ok":true,"accepted":false,"reason":5}\n',
        b'{"ok":true,"accepted":1,"reason":"not true"}\n',
        b'{"ok":false,"error":"admit: field \'uid\' must be int"}\n',
        b'{"ok":false}\n',
        b'{"ok":1,"accepted":true}\n',
        b'{"accepted":true, "ok" : true , "x":[1,{"y":null}]}',
        b"[1]\n",
        b"not json\n",
        b'{"ok":true}\n{"ok":true}\n',
        b"",
    ],
)
def test_every_answer_is_taken_alike(
    rig: Rig, reply: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    rig.raw.reply = reply
    outcome, sent = _both(rig, "prolog", _prolog_env(), capfd)
    assert len(sent) == 1
    assert outcome[0] in (0, 1)


def test_the_agents_own_server_admits_refuses_and_fails_alike(
    rig: Rig, capfd: pytest.CaptureFixture[str]
) -> None:
    """Job 1 admitted, 2 refused (the reason on stderr), 3 an agent error; as
    root the real server serves admit, as anyone else it refuses the same way."""
    for job, code in (("1", 0), ("2", 1), ("3", 1)):
        env = _prolog_env(node="agent", SLURM_JOB_ID=job)
        outcome, sent = _both(rig, "prolog", env, capfd)
        assert outcome[0] == code
        if os.geteuid() == 0:
            assert [r["slurm_job"] for r in sent] == [int(job)]
            assert sent[0]["nodes"] == ["gpu07", "node1", "node10", "node2"]
    if os.geteuid() == 0:
        assert b"refused on this node: sha256 mismatch" in _c(rig, "prolog", _benv(job="2"))[1]


def _benv(job: str) -> dict[bytes, bytes]:
    env = _prolog_env(node="agent", SLURM_JOB_ID=job)
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in env.items()}


@pytest.mark.parametrize(
    "more",
    [
        {},
        {"SLURM_JOB_EXIT_CODE2": "3:0"},
        {"SLURM_JOB_EXIT_CODE2": "0:9", "SLURM_JOB_EXIT_CODE": "256"},
        {"SLURM_JOB_EXIT_CODE2": "007:00"},
        {"SLURM_JOB_EXIT_CODE2": "7:0:1", "SLURM_JOB_EXIT_CODE": "768"},
        {"SLURM_JOB_EXIT_CODE2": ":1", "SLURM_JOB_EXIT_CODE": "15"},
        {"SLURM_JOB_EXIT_CODE": "x"},
        {"SLURM_JOB_EXIT_CODE": "99999999999999999999999"},
        {"SLURM_JOB_ID": "0042"},
    ],
)
def test_the_epilog_sends_the_same_release_bytes(
    rig: Rig, more: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    rig.raw.reply = b'{"ok":true,"released":true}\n'
    outcome, sent = _both(rig, "epilog", _prolog_env(**more), capfd)
    assert outcome == (0, b"")
    assert len(sent) == 1 and sent[0].startswith(b'{"op":"release",')


@pytest.mark.parametrize(
    "more", [{"SLURM_JOB_ID": ""}, {"SLURM_JOB_ID": "<unset>"}, {"SLURM_JOB_ID": "x1"}]
)
def test_the_epilog_without_a_job_id_fails_alike(
    rig: Rig, more: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    outcome, sent = _both(rig, "epilog", _prolog_env(**more), capfd)
    assert outcome[0] == 1 and b"SLURM_JOB_ID" in outcome[1]
    assert sent == []


def test_the_epilog_on_the_agents_server_alike(rig: Rig, capfd: pytest.CaptureFixture[str]) -> None:
    for job in ("1", "5"):
        env = _prolog_env(node="agent", SLURM_JOB_ID=job, SLURM_JOB_EXIT_CODE2="0:15")
        outcome, sent = _both(rig, "epilog", env, capfd)
        assert outcome == (0, b"")
        if os.geteuid() == 0:
            assert sent == [{"op": "release", "slurm_job": int(job), "status": 143}]


def test_an_agent_that_never_answers_times_out_alike(tmp_path: Path) -> None:
    """Only the C side is run (the Python hook's bound is the same number, and
    waiting it twice costs too long): it gives up after the bound and says so."""
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as mute:
        mute.bind(str(tmp_path / "mute.sock"))
        mute.listen(1)
        client = hookclient.build(tmp_path / "hooks")
        assert client is not None
        env = {k: v if isinstance(v, str) else v.decode() for k, v in _prolog_env("mute").items()}
        # prolog_timeout 6: bound max(1, 6 - 5) = 1 s
        done = subprocess.run(
            [str(client), "prolog", str(tmp_path / "%n.sock"), "6"],
            env=env,
            capture_output=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert (
        done.stderr
        == f"beoctl: node agent socket {tmp_path}/mute.sock: no answer within 1 s\n".encode()
    )
