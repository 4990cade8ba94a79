"""The node agent's local socket: the protocol, and the blocking client the
prolog, epilog and ``beonode step --slurm-job`` use.

Newline-delimited JSON over a Unix stream socket, one request and one answer
per connection. A request is ``{"op": OP, ...}``; an answer is ``{"ok": true,
...}`` or ``{"ok": false, "error": TEXT}``. The caller is who the kernel says
(``SO_PEERCRED``), never anything it sends; :data:`ROOT_ONLY` ops are refused
to any uid but 0 (see :mod:`launcher.node.local` for the trust model).

This module imports only the standard library's light parts: the prolog runs
it on every Beolaunch job's start.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from launcher.errors import LocalSocketError

#: Largest request or answer line, bytes.
MAX_LINE = 64 * 1024
#: op -> required fields and their types
OPS: dict[str, dict[str, type]] = {
    "admit": {"slurm_job": int, "manifest": str, "uid": int, "gid": int, "user": str},
    "release": {"slurm_job": int, "status": int},
    "root": {"slurm_job": int},
}
ROOT_ONLY = frozenset({"admit", "release"})


class RequestError(ValueError):
    """A request line that is not valid (the server answers it ``ok: false``)."""


def parse_request(line: bytes) -> dict[str, Any]:
    """The request in ``line``; raises RequestError naming what is wrong."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"request is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RequestError("request is not a JSON object")
    op = doc.get("op")
    if op not in OPS:
        raise RequestError(f"op {op!r} is not served here; expected one of {', '.join(OPS)}")
    for name, kind in OPS[op].items():
        value = doc.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RequestError(f"{op}: field {name!r} must be {kind.__name__}, got {value!r}")
    if op == "admit" and not isinstance(doc.get("work_dir"), (str, type(None))):
        raise RequestError("admit: field 'work_dir' must be a string")
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def request(path: str, doc: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send ``doc`` to the agent at ``path``; its answer (``ok`` true).

    Never blocks past ``timeout`` seconds in total. Raises LocalSocketError
    when the socket cannot be reached, times out or answers badly, and when
    the answer is ``ok: false`` (its ``error`` as the detail).
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(encode(doc))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(MAX_LINE)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_LINE:
                    raise LocalSocketError(path, "the answer is too long")
    except TimeoutError as exc:
        raise LocalSocketError(path, f"no answer within {timeout:g} s") from exc
    except OSError as exc:
        raise LocalSocketError(
            path, f"{exc.strerror or exc}; is the node agent running with this --local-socket?"
        ) from exc
    try:
        answer = json.loads(data)
    except ValueError as exc:
        raise LocalSocketError(path, "the answer is not JSON (the agent closed early?)") from exc
    if not isinstance(answer, dict):
        raise LocalSocketError(path, "the answer is not a JSON object")
    if answer.get("ok") is not True:
        raise LocalSocketError(path, str(answer.get("error") or "refused without a reason"))
    return answer
