"""The agent's local socket: requests parsed and checked, root-only ops, the
real Unix socket round trip with SO_PEERCRED (the handler is a stand-in)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import LocalSocketError
from launcher.node.local import answer, serve_local
from launcher.node.localproto import RequestError, parse_request, request

ADMIT = (
    b'{"op":"admit","slurm_job":5,"manifest":"' + b"a" * 64 + b'","uid":1000,"gid":1000,'
    b'"user":"ann","work_dir":"/home/ann"}'
)


class Handler:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def admit(self, req: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(("admit", req))
        return {"accepted": True, "job": 9}

    async def release(self, req: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(("release", req))
        return {"released": False}

    def root(self, req: dict[str, Any], uid: int) -> dict[str, Any]:
        if uid != 1000:
            raise LocalSocketError("local", f"no root for uid {uid}")
        return {"root": "/r", "tmp": "/t", "home": None, "job": 9}


@pytest.mark.parametrize(
    ("line", "what"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"op":"exec"}', "not served"),
        (b'{"op":"root","slurm_job":"5"}', "'slurm_job' must be int"),
        (b'{"op":"root","slurm_job":true}', "'slurm_job' must be int"),
        (b'{"op":"release","slurm_job":5}', "'status' must be int"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(line: bytes, what: str) -> None:
    with pytest.raises(RequestError, match=what):
        parse_request(line)


def test_admit_and_release_are_for_root_only() -> None:
    handler = Handler()
    got = asyncio.run(answer(handler, ADMIT, 1000))
    assert got["ok"] is False and "for root" in got["error"]
    release = b'{"op":"release","slurm_job":5,"status":0}'
    assert asyncio.run(answer(handler, release, 1000))["ok"] is False
    assert handler.seen == []
    assert asyncio.run(answer(handler, ADMIT, 0)) == {"ok": True, "accepted": True, "job": 9}
    assert handler.seen[0][1]["work_dir"] == "/home/ann"


def test_root_lookup_answers_the_jobs_uid_and_refuses_others() -> None:
    handler = Handler()
    line = b'{"op":"root","slurm_job":5}'
    assert asyncio.run(answer(handler, line, 1000))["root"] == "/r"
    refused = asyncio.run(answer(handler, line, 1001))
    assert refused["ok"] is False and "uid 1001" in refused["error"]


def test_round_trip_over_a_real_socket_uses_the_kernels_uid(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"

    async def main() -> tuple[dict[str, Any], str]:
        server = await serve_local(path, Handler())
        try:
            mode = oct(path.stat().st_mode & 0o777)
            doc = {"op": "release", "slurm_job": 5, "status": 0, "uid": 1000}  # uid ignored
            got = await asyncio.to_thread(request, str(path), doc, 5.0)
            return got, mode
        finally:
            server.close()
            await server.wait_closed()

    got, mode = asyncio.run(main())
    assert mode == "0o666"
    # this test's uid is the caller, whatever the request says: root may release
    if os.geteuid() == 0:
        assert got == {"ok": True, "released": False}


def test_a_missing_socket_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(LocalSocketError, match=r"agent\.sock") as info:
        request(str(tmp_path / "agent.sock"), {"op": "root", "slurm_job": 1}, 1.0)
    assert info.value.path == str(tmp_path / "agent.sock")
