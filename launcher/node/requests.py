"""What the master asks of a node, as typed values, and what the node answers
when it cannot do it.

``launcher.wire`` checks a message's top-level fields; the documents nested in
``prepare`` (sources, envroot) and ``exec`` (tasks) are checked here, so a malformed
one is a WireError naming the field, never a KeyError in a handler.
"""

from __future__ import annotations

import errno
from typing import Any

from cachefs.client import HttpSource
from cachefs.manifest import Manifest
from cachefs.service import JOB_HEADER
from cachefs.source import ObjectSource
from launcher import wire
from launcher.envconfig import NodeEnvSettings
from launcher.errors import TaskProgramNotFoundError
from launcher.node.tasks.sandbox import TaskSpec


def sources_of(prepare: wire.Prepare) -> list[ObjectSource]:
    """The object services a ``prepare`` names, in the order to try them."""
    sources: list[ObjectSource] = []
    for url, kind in prepare.source_list():
        # A peer is told the job, so it waits for its own prepare if it has not had it.
        headers = {JOB_HEADER: str(prepare.job)} if kind == "peer" else None
        sources.append(HttpSource(url, prepare.token, kind=kind, headers=headers))
    return sources


def envroot_of(prepare: wire.Prepare) -> NodeEnvSettings:
    """The ``[envroot]`` settings a ``prepare`` carries (defaults from an older
    master). Raises WireError naming the bad field."""
    try:
        return NodeEnvSettings.from_wire(prepare.envroot)
    except ValueError as exc:
        raise wire.WireError(f"prepare message: envroot: {exc}") from None


def refusal(exc: Exception, manifest: Manifest | None) -> str:
    """``exc``'s message, plus the manifest paths of the objects it names
    (``.sha256`` of one bad object, ``.missing`` of unavailable ones)."""
    named = getattr(exc, "missing", None) or [getattr(exc, "sha256", None)]
    shas = {s for s in named if isinstance(s, str)}
    paths = [e.path for e in manifest or () if e.sha256 in shas]
    if not paths:
        return str(exc)
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return f"{exc} [file(s): {shown}]"


def _field(doc: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    value = doc.get(name, default)
    if value is ...:
        raise wire.WireError(f"exec message: task {doc.get('task')!r} has no '{name}'")
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok and value is not default:
        raise wire.WireError(
            f"exec message: task {doc.get('task')!r} field '{name}' is not {kind.__name__}"
        )
    return value


def task_of(doc: object) -> tuple[int, TaskSpec]:
    """(task number, what to run) from one task document of an ``exec``.

    Raises WireError for a missing or mistyped field; the values themselves
    (an empty argv, a relative cwd, uid 0) are TaskSpec.check's to refuse.
    """
    if not isinstance(doc, dict):
        raise wire.WireError("exec message: a task is not an object")
    task = _field(doc, "task", int)
    if task < 0:
        raise wire.WireError(f"exec message: task number {task} is negative")
    argv = _field(doc, "argv", list)
    env = _field(doc, "env", dict, {})
    groups = _field(doc, "groups", list, [])
    for name, values in (("argv", argv), ("env", [*env, *env.values()])):
        if not all(isinstance(v, str) for v in values):
            raise wire.WireError(f"exec message: task {task} '{name}' holds a non-string")
    if not all(isinstance(g, int) and not isinstance(g, bool) for g in groups):
        raise wire.WireError(f"exec message: task {task} 'groups' holds a non-int")
    return task, TaskSpec(
        argv=argv,
        env=env,
        cwd=_field(doc, "cwd", str, "/"),
        uid=_field(doc, "uid", int),
        gid=_field(doc, "gid", int),
        groups=groups,
        home=_field(doc, "home", str, None),
        # The master decides whether root may run jobs ([jobs] allow_root).
        allow_root=_field(doc, "allow_root", bool, False),
    )


def start_status(exc: Exception) -> int:
    """What a shell reports for a program it could not start: 127 not found, else 126."""
    if isinstance(exc, TaskProgramNotFoundError):
        return 127
    return 127 if getattr(exc, "errno", 0) == errno.ENOENT else 126
