"""The node agent's local Unix socket (``beonode run --local-socket PATH``).

Trust model: whoever can connect may ask, but the caller is the uid the kernel
reports for the peer (``SO_PEERCRED``), never a field of the request.
``admit`` and ``release`` (the Slurm prolog and epilog, which slurmd runs as
root) are served to uid 0 only; ``root`` (where a Slurm job's env root is,
for ``beonode step``) to root and to the job's own uid. The socket is bound
mode 0666 (umask set before ``bind``, never chmod-ed after) in a directory
the agent owns: users' steps must reach it; the check above is the gate.
Protocol: :mod:`launcher.node.localproto`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any, Protocol

from launcher.errors import BeolaunchError
from launcher.node.localproto import MAX_LINE, ROOT_ONLY, RequestError, encode, parse_request

log = logging.getLogger(__name__)

#: umask while binding, so the socket is born mode 0666
SOCKET_UMASK = 0o111
#: Seconds a client has to send its request line (a stalled one held a
#: connection, and the task serving it, for good).
REQUEST_TIMEOUT_S = 10.0
#: Requests served at once; one more is answered "busy" and closed. The prolog
#: and epilog of every job on the node, and its users' steps, stay far below.
MAX_CLIENTS = 64


class LocalHandler(Protocol):
    """What serves the requests (:class:`launcher.node.slurmjobs.SlurmJobs`)."""

    async def admit(self, request: dict[str, Any]) -> dict[str, Any]: ...

    async def release(self, request: dict[str, Any]) -> dict[str, Any]: ...

    def root(self, request: dict[str, Any], uid: int) -> dict[str, Any]: ...


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


async def answer(handler: LocalHandler, line: bytes, uid: int) -> dict[str, Any]:
    """The answer to one request ``line`` from ``uid`` (never raises for a bad request)."""
    try:
        request = parse_request(line)
    except RequestError as exc:
        return {"ok": False, "error": str(exc)}
    op = request["op"]
    if op in ROOT_ONLY and uid != 0:
        return {"ok": False, "error": f"{op} is for root (the Slurm prolog/epilog), not uid {uid}"}
    try:
        if op == "admit":
            result = await handler.admit(request)
        elif op == "release":
            result = await handler.release(request)
        else:
            result = handler.root(request, uid)
    except BeolaunchError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, **result}


async def serve_local(path: Path, handler: LocalHandler) -> asyncio.AbstractServer:
    """Listen on ``path`` (a stale socket there is replaced); close the server to stop."""

    active = 0

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= MAX_CLIENTS:
            busy = f"the node agent is serving its limit of {MAX_CLIENTS} local requests; retry"
            writer.write(encode({"ok": False, "error": busy}))
            writer.close()
            return
        active += 1
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock)
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                writer.write(encode({"ok": False, "error": "request line too long"}))
                return
            except asyncio.IncompleteReadError:
                return
            except TimeoutError:
                late = f"no whole request line within {REQUEST_TIMEOUT_S:.0f} s; send one line"
                writer.write(encode({"ok": False, "error": late}))
                return
            result = await answer(handler, line, uid)
            writer.write(encode(result))
            await writer.drain()
        except (OSError, ConnectionError) as exc:
            log.debug("local socket client went away: %s", exc)
        except Exception:  # one bad request must not stop the socket
            log.exception("local socket request failed")
            writer.write(encode({"ok": False, "error": "node agent error; see its log"}))
        finally:
            active -= 1
            writer.close()

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a socket left by an agent that died
    old = os.umask(SOCKET_UMASK)
    try:
        return await asyncio.start_unix_server(client, str(path), limit=MAX_LINE)
    finally:
        os.umask(old)
