"""Messages between master and node agents (and to ``beosub``), version 1.

Trust model: a node agent authenticates with its per-node token (sha256 kept in
``nodes.token_sha256``) when it opens the control WebSocket; a user is the
uid of the Unix-socket peer (SO_PEERCRED). Nothing inside a message says who
sent it. Each side serves only the message types in its allow-list
(:data:`NODE_TO_MASTER`, :data:`MASTER_TO_NODE`, :data:`MASTER_TO_USER`);
:func:`decode` refuses anything else, and every field is type-checked, so a
malformed message is a WireError naming the field, never a KeyError deep in a
handler.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, TypeVar, get_type_hints

from launcher.errors import BeolaunchError

VERSION = 1
#: Longest ``notice`` text, characters (it is printed on a terminal as one line).
MAX_NOTICE = 1024
#: A fill report's counts (and seconds) stay below this: the database's BIGINT.
MAX_COUNT = 2**63


class WireError(BeolaunchError):
    """A message that is not valid JSON, not version 1, not allowed, or malformed."""


@dataclass(frozen=True)
class Message:
    type: ClassVar[str] = ""

    def check(self) -> None:
        """Raise WireError for a field whose value is wrong beyond its type."""


# --- node -> master -------------------------------------------------------------


@dataclass(frozen=True)
class Hello(Message):
    type: ClassVar[str] = "hello"
    name: str
    hardware: dict[str, Any]
    cache: dict[str, Any]
    #: results of tasks that ended while the master was away (Exited documents)
    held: list[dict[str, Any]] = field(default_factory=list)
    #: where the agent serves its cache to peers (on the address the master sees
    #: it connect from); None: it does not
    peer_port: int | None = None
    #: the jobs the agent holds (prepared, running, or ended and not yet
    #: released); None from an agent too old to say. A running job missing here
    #: lost its tasks on this node (the agent was restarted).
    jobs: list[int] | None = None
    #: what keeps the node out of scheduling (a site mount that failed); empty: nothing
    problems: list[str] = field(default_factory=list)

    def check(self) -> None:
        check_problems("hello", self.problems)


#: Most problems a node reports at once (one per site mount, and a few more).
MAX_PROBLEMS = 32


def check_problems(what: str, problems: Sequence[str]) -> None:
    """A node's problems: at most :data:`MAX_PROBLEMS`, each one printable line."""
    if len(problems) > MAX_PROBLEMS or not all(
        isinstance(p, str) and 0 < len(p) <= MAX_NOTICE and p.isprintable() for p in problems
    ):
        raise WireError(
            f"{what} message: field 'problems' must be at most {MAX_PROBLEMS} lines of 1 to "
            f"{MAX_NOTICE} printable characters"
        )


@dataclass(frozen=True)
class Health(Message):
    """The node's problems changed (a site mount failed, or came back): with
    any, the master keeps it out of scheduling, the reason shown as its drain."""

    type: ClassVar[str] = "health"
    problems: list[str]

    def check(self) -> None:
        check_problems("health", self.problems)


@dataclass(frozen=True)
class Heartbeat(Message):
    type: ClassVar[str] = "heartbeat"
    load: list[float]
    memory: dict[str, int]
    cache: dict[str, Any]
    procs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FillReport:
    """What one node's cache fill for one job cost: ``prepared.fill`` as
    :meth:`to_wire` writes it and :meth:`from_wire` reads it (an absent key is 0)."""

    objects_total: int = 0
    objects_hit: int = 0
    bytes_total: int = 0
    bytes_from_master: int = 0
    bytes_from_peers: int = 0
    fill_seconds: float = 0.0

    #: field -> its key in ``prepared.fill``
    KEYS: ClassVar[dict[str, str]] = {
        "objects_total": "objects_total",
        "objects_hit": "objects_hit",
        "bytes_total": "bytes_total",
        "bytes_from_master": "bytes_from_master",
        "bytes_from_peers": "bytes_from_peers",
        "fill_seconds": "seconds",
    }

    @classmethod
    def from_wire(cls, fill: dict[str, Any]) -> FillReport:
        """The report ``fill`` holds; raises WireError naming the first field that is
        not a count (seconds: a number) from 0 to below MAX_COUNT, or hits beyond
        the objects."""
        values: dict[str, Any] = {}
        for name, key in cls.KEYS.items():
            value = fill.get(key, 0)
            seconds = name == "fill_seconds"
            number = isinstance(value, int | float) if seconds else isinstance(value, int)
            # not 0 <= NaN: NaN is refused too
            if not number or isinstance(value, bool) or not 0 <= value < MAX_COUNT:
                what = "a number of seconds" if seconds else "a count"
                raise WireError(
                    f"prepared message: fill field '{key}' must be {what} from 0 "
                    f"to below 2**63, got {value!r:.40}"
                )
            values[name] = float(value) if seconds else value
        report = cls(**values)
        if report.objects_hit > report.objects_total:
            raise WireError(
                f"prepared message: fill has {report.objects_hit} hits "
                f"of {report.objects_total} objects"
            )
        return report

    def to_wire(self) -> dict[str, int | float]:
        """``prepared.fill`` as the node sends it."""
        return {key: getattr(self, name) for name, key in self.KEYS.items()}


@dataclass(frozen=True)
class Prepared(Message):
    type: ClassVar[str] = "prepared"
    job: int
    accepted: bool
    reason: str | None = None
    #: FillReport.to_wire() (kept a document here: a bad one costs the node its
    #: fill statistics, never its acceptance; FillReport.from_wire() checks it)
    fill: dict[str, Any] = field(default_factory=dict)
    #: refused because every copy of this object (sha256) failed verification: the
    #: master checks its own copy before blaming the node (storerepair.py)
    corrupt: str | None = None
    #: refused because the job's files do not fit beside what the node's cache
    #: holds pinned: not the node's fault, it is not drained
    full: bool = False


@dataclass(frozen=True)
class Progress(Message):
    """A node's cache fill for a job, so ``beosub`` can draw a bar per node."""

    type: ClassVar[str] = "progress"
    job: int
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    node: str | None = None  # filled in by the master when relaying to users


@dataclass(frozen=True)
class Output(Message):
    type: ClassVar[str] = "output"
    job: int
    task: int
    stream: str
    data: str  # base64
    node: str | None = None  # filled in by the master when relaying to users

    @classmethod
    def of(cls, job: int, task: int, stream: str, data: bytes) -> Output:
        return cls(job, task, stream, base64.b64encode(data).decode("ascii"))

    def payload(self) -> bytes:
        return base64.b64decode(self.data)

    def check(self) -> None:
        # Every reader calls payload(): refuse what it could not decode here, once.
        try:
            base64.b64decode(self.data, validate=True)
        except ValueError as exc:  # binascii.Error, or a str that is not ASCII
            raise WireError(f"output message: field 'data' is not base64: {exc}") from None


@dataclass(frozen=True)
class Exited(Message):
    type: ClassVar[str] = "exited"
    job: int
    task: int
    status: int  # as a shell reports it: 128+N for signal N
    signal: int | None = None
    rusage: dict[str, float] = field(default_factory=dict)
    node: str | None = None  # filled in by the master when relaying to users


@dataclass(frozen=True)
class Admit(Message):
    """A Slurm prolog on this node asks to admit a Slurm job (docs/slurm.md, "Admission").

    The identity fields come from slurmd's prolog environment, relayed by the
    agent from a root-only local request; the master still checks the
    manifest's owner against ``uid``. ``nodes`` is the job's node list
    (SLURM_NODELIST expanded; None from an older prolog): the master lays the
    job's peer distribution tree over it."""

    type: ClassVar[str] = "admit"
    slurm_job: int
    manifest: str
    uid: int
    gid: int
    user: str
    work_dir: str | None = None
    nodes: list[str] | None = None


@dataclass(frozen=True)
class SlurmEnded(Message):
    """The Slurm epilog ran on this node for ``slurm_job`` (Beolaunch job ``job``)."""

    type: ClassVar[str] = "slurm_ended"
    slurm_job: int
    job: int
    status: int  # as a shell reports it: 128+N for signal N
    rusage: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LateLookup(Message):
    """A job looked up ``path``, which its manifest lacks (docs/execution.md, "Late
    files"): ``op`` "lookup" (the entry), "list" (a directory's names) or
    "open" (a file: the master stores it and grants it to the job's capability,
    and answers its sha256)."""

    type: ClassVar[str] = "late_lookup"
    job: int
    request: int
    op: str
    path: str

    def check(self) -> None:
        if self.op not in ("lookup", "list", "open"):
            raise WireError(f"late_lookup: op must be lookup, list or open, not {self.op!r}")
        if not self.path.startswith("/") or "\0" in self.path or len(self.path) > 4096:
            raise WireError("late_lookup: path must be absolute, NUL-free, at most 4096 bytes")


@dataclass(frozen=True)
class Notice(Message):
    """What a job's submitter should know that is no failure (a site bind or
    the home missing on a node): a node says it once per job, never in a
    task's output; the master records it as the job's event and relays it to
    the job's watchers with ``node`` set (``beosub`` prints it on its stderr)."""

    type: ClassVar[str] = "notice"
    job: int
    text: str
    node: str | None = None  # filled in by the master when relaying to users

    def check(self) -> None:
        if not 0 < len(self.text) <= MAX_NOTICE or not self.text.isprintable():
            raise WireError(
                f"notice message: field 'text' must be 1 to {MAX_NOTICE} printable characters"
            )


# --- master -> node -------------------------------------------------------------


@dataclass(frozen=True)
class Admission(Message):
    """The master's answer to ``admit``: after the node's ``prepared`` was recorded
    (accepted), or at once when a check failed (``job`` None) or the node refused."""

    type: ClassVar[str] = "admission"
    slurm_job: int
    accepted: bool
    job: int | None = None
    reason: str | None = None


#: Where a prepare's objects come from: the master's object service, or a peer's.
SOURCE_KINDS = ("master", "peer")


@dataclass(frozen=True)
class Prepare(Message):
    type: ClassVar[str] = "prepare"
    job: int
    manifest: dict[str, Any]  # a cachefs manifest document
    sources: list[dict[str, str]]  # [{"url": ..., "kind": "master"|"peer"}]
    token: str  # bearer token for the object services
    #: launcher.envconfig.EnvRootSettings.for_nodes(): node files, binds, late
    #: policy; None from an older master
    envroot: dict[str, Any] | None = None

    def source_list(self) -> list[tuple[str, str]]:
        """(url, kind) of each source, in the order to try them. Raises WireError
        for one that is not a dict with an http(s) url and a known kind."""
        found: list[tuple[str, str]] = []
        for i, src in enumerate(self.sources):
            url = src.get("url") if isinstance(src, dict) else None
            kind = src.get("kind", "master") if isinstance(src, dict) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise WireError(f"prepare message: source {i} has no http(s) 'url': {src!r}")
            if kind not in SOURCE_KINDS:
                raise WireError(f"prepare message: source {i} 'kind' is not one of {SOURCE_KINDS}")
            found.append((url, kind))
        return found


@dataclass(frozen=True)
class Exec(Message):
    type: ClassVar[str] = "exec"
    job: int
    #: each: {task, argv, env, cwd, uid, gid, groups, home}
    tasks: list[dict[str, Any]]


@dataclass(frozen=True)
class Signal(Message):
    type: ClassVar[str] = "signal"
    job: int
    signum: int


@dataclass(frozen=True)
class Release(Message):
    type: ClassVar[str] = "release"
    job: int


@dataclass(frozen=True)
class LateAnswer(Message):
    """The answer to ``late_lookup`` ``request``: ``answer["kind"]`` is "file" (with
    sha256, size, mode, mtime), "symlink" (target), "dir" (names), "absent",
    "denied" or "error" (message)."""

    type: ClassVar[str] = "late_answer"
    job: int
    request: int
    answer: dict[str, Any]


# --- master -> user stream ------------------------------------------------------


@dataclass(frozen=True)
class Done(Message):
    """The job ended: ``status`` is the worst task's (what beosub exits with)."""

    type: ClassVar[str] = "done"
    job: int
    status: int
    reason: str | None = None


@dataclass(frozen=True)
class Error(Message):
    type: ClassVar[str] = "error"
    message: str


M = TypeVar("M", bound=Message)

NODE_TO_MASTER: dict[str, type[Message]] = {
    m.type: m
    for m in (
        Hello,
        Health,
        Heartbeat,
        Prepared,
        Progress,
        Output,
        Exited,
        Admit,
        SlurmEnded,
        LateLookup,
        Notice,
        Error,
    )
}
MASTER_TO_NODE: dict[str, type[Message]] = {
    m.type: m for m in (Prepare, Exec, Signal, Release, Admission, LateAnswer, Error)
}
MASTER_TO_USER: dict[str, type[Message]] = {
    m.type: m for m in (Progress, Output, Exited, Notice, Done, Error)
}


def encode(message: Message) -> str:
    # The fields as they are, not asdict(): that deep-copies every nested dict
    # first (a prepare's whole manifest, once per node of a 1,000-node job).
    body = {f.name: getattr(message, f.name) for f in fields(message)}
    return json.dumps(
        {"v": VERSION, "type": message.type, **body}, separators=(",", ":"), default=_nested
    )


def encode_sharing(messages: Sequence[Message], shared: str) -> list[str]:
    """``encode`` of each message, where every one carries the same value in field
    ``shared`` (a job's manifest in each node's prepare): that value is encoded
    once, not once per message."""
    if not messages:
        return []
    value = getattr(messages[0], shared)
    text = json.dumps(value, separators=(",", ":"), default=_nested)
    mark = json.dumps(f"shared-{secrets.token_hex(16)}")  # in no message's text
    out = []
    for message in messages:
        if getattr(message, shared) is not value:
            raise ValueError(
                f"encode_sharing: {type(message).__name__}.{shared} differs between messages"
            )
        body = {f.name: getattr(message, f.name) for f in fields(message)}
        body[shared] = json.loads(mark)
        whole = json.dumps(
            {"v": VERSION, "type": message.type, **body}, separators=(",", ":"), default=_nested
        )
        out.append(whole.replace(mark, text, 1))
    return out


def _nested(value: Any) -> Any:
    """A dataclass inside a message, as json.dumps meets it."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_SIMPLE: dict[Any, type | tuple[type, ...]] = {int: int, float: (int, float), str: str, bool: bool}


def _check(cls: type[Message], name: str, value: Any, hint: Any) -> None:
    origin = getattr(hint, "__origin__", None)
    args = getattr(hint, "__args__", ())
    if origin is None and hint in _SIMPLE:
        ok = isinstance(value, _SIMPLE[hint]) and not (hint is not bool and isinstance(value, bool))
    elif origin is list:
        ok = isinstance(value, list)
    elif origin is dict:
        ok = isinstance(value, dict)
    elif type(None) in args:  # X | None
        if value is None:
            return
        _check(cls, name, value, next(a for a in args if a is not type(None)))
        return
    else:
        ok = True
    if not ok:
        raise WireError(
            f"{cls.type} message: field '{name}' has the wrong type ({type(value).__name__})"
        )


def decode(text: str | bytes, allowed: dict[str, type[Message]]) -> Message:
    """Parse one message; raise WireError unless it is valid and allowed here."""
    try:
        doc = json.loads(text)
    except RecursionError:
        raise WireError("message is nested too deeply to decode") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"message is not JSON: {exc}") from exc
    # `type(...) is int`: true and 1.0 equal 1 but are not version 1
    if not isinstance(doc, dict) or type(doc.get("v")) is not int or doc["v"] != VERSION:
        raise WireError(f"message is not a version {VERSION} object")
    cls = allowed.get(str(doc.get("type")))
    if cls is None:
        raise WireError(f"message type {doc.get('type')!r} is not served here")
    hints = get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in doc:
            _check(cls, f.name, doc[f.name], hints[f.name])
            kwargs[f.name] = doc[f.name]
    try:
        message = cls(**kwargs)
    except TypeError as exc:
        raise WireError(f"{cls.type} message: {exc}") from exc
    message.check()
    return message


def expect(message: Message, cls: type[M]) -> M:
    if not isinstance(message, cls):
        raise WireError(f"expected a {cls.type} message, got {message.type}")
    return message
