"""Parsing what the Slurm 22.05 commands print; pure functions, tested on captured output."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from launcher.errors import SlurmOutputError
from launcher.slurm.types import FinishedJob, Job, NodeInfo


def version(text: str) -> str:
    """``slurm-wlm 22.05.8`` or ``slurm 22.05.8`` -> ``22.05.8``."""
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    if not m:
        raise SlurmOutputError("sinfo --version", text, "no version number")
    return m.group(1)


def sbatch_job_id(text: str) -> int:
    """``sbatch --parsable`` prints ``ID`` or ``ID;CLUSTER``."""
    first = text.strip().split(";", 1)[0]
    if not first.isdigit():
        raise SlurmOutputError("sbatch --parsable", text, "no job id")
    return int(first)


def expand_hostlist(text: str) -> tuple[str, ...]:
    """``node[1-3,5],gpu7`` -> ``(node1, node2, node3, node5, gpu7)``; ``(null)``/empty -> ()."""
    text = text.strip()
    if not text or text in ("(null)", "None"):
        return ()
    names: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", text):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not m:
            names.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for item in ranges.split(","):
            lo, _, hi = item.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise SlurmOutputError("node list", text, f"bad range {item!r}")
            for i in range(int(lo), int(hi or lo) + 1):
                names.append(f"{prefix}{str(i).zfill(len(lo))}{suffix}")
    return tuple(names)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "None", "(null)") else text


def exit_status(value: Any) -> tuple[int | None, int | None]:
    """(exit code, signal) from Slurm's forms: a wait(2) status as an int
    (squeue --json 22.05: ``768`` is exit 3) or ``CODE:SIGNAL`` text (scontrol,
    jobcomp, pyslurm)."""
    if isinstance(value, str) and ":" in value:
        code, _, sig = value.partition(":")
        return _int_or_none(code), _int_or_none(sig) or None
    status = _int_or_none(value)
    if status is None:
        return None, None
    if status & 0x7F:
        return None, status & 0x7F
    return status >> 8, None


_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


def _base_state(text: str) -> str:
    # "CANCELLED by 0" in scontrol; "COMPLETING" etc. pass through.
    return text.split()[0].upper() if text.strip() else "UNKNOWN"


def job_from_mapping(d: Mapping[str, Any]) -> Job:
    """A Job from a dict with squeue --json's (and pyslurm 22.5's) key names.

    Raises SlurmOutputError when it has no job id."""
    job_id = _int_or_none(d.get("job_id"))
    if job_id is None:
        raise SlurmOutputError("job record", repr(dict(d))[:200], "no job_id")
    state = _base_state(str(d.get("job_state") or ""))
    code, sig = exit_status(d.get("exit_code"))
    if state not in _ENDED:
        code, sig = None, None  # 22.05 reports 0 for jobs that have not ended
    return Job(
        job_id=job_id,
        name=str(d.get("name") or ""),
        state=state,
        reason=_text_or_none(d.get("state_reason")),
        nodes=expand_hostlist(str(d.get("nodes") or "")),
        exit_code=code,
        signal=sig,
        comment=_text_or_none(d.get("comment")),
        user_id=_int_or_none(d.get("user_id")),
        partition=_text_or_none(d.get("partition")),
        priority=_int_or_none(d.get("priority")),
    )


def _json(command: str, text: str, key: str) -> list[Mapping[str, Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SlurmOutputError(command, text, f"not JSON ({exc})") from exc
    rows = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise SlurmOutputError(command, text, f"no {key!r} list")
    errors = doc.get("errors") or []
    if errors:
        raise SlurmOutputError(command, json.dumps(errors), "errors reported")
    return [r for r in rows if isinstance(r, dict)]


def squeue_json(text: str) -> list[Job]:
    """Every job in ``squeue --json`` output, by id."""
    jobs = [job_from_mapping(d) for d in _json("squeue --json", text, "jobs")]
    return sorted(jobs, key=lambda j: j.job_id)


def _features(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value if v)
    text = _text_or_none(value)
    return tuple(f for f in text.split(",") if f) if text else ()


def node_from_mapping(d: Mapping[str, Any]) -> NodeInfo:
    """A NodeInfo from sinfo --json's node keys (``state``, ``state_flags``) or
    pyslurm's (``state`` as ``IDLE+DRAIN``, ``node_addr``)."""
    raw = str(d.get("state") or "unknown")
    base, *more = raw.split("+")
    flags = [str(f).upper() for f in d.get("state_flags") or []] + [f.upper() for f in more]
    return NodeInfo(
        name=str(d.get("name") or ""),
        state=base.lower(),
        flags=tuple(flags),
        reason=_text_or_none(d.get("reason")),
        address=_text_or_none(d.get("address") or d.get("node_addr")),
        cpus=_int_or_none(d.get("cpus")),
        features=_features(d.get("active_features") or d.get("features")),
    )


def sinfo_json(text: str) -> list[NodeInfo]:
    """Every node in ``sinfo --json`` output, by name."""
    nodes = [node_from_mapping(d) for d in _json("sinfo --json", text, "nodes")]
    return sorted(nodes, key=lambda n: n.name)


#: scontrol prints these alone at the end of a line, with the value verbatim
#: (spaces and '=' included), so the rest of the line is the value.
_LINE_KEYS = frozenset(
    {
        "JobName",
        "Comment",
        "AdminComment",
        "SystemComment",
        "Command",
        "WorkDir",
        "StdErr",
        "StdIn",
        "StdOut",
        "Power",
        "Reason",
    }
)
_KEY_RE = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/]*)=")


def key_values(text: str) -> dict[str, str]:
    """``scontrol show`` output as a dict (first occurrence of a key wins).

    Values end at the next `` Key=``, except for keys scontrol prints last on
    their line (Comment, WorkDir, ...), whose value is the rest of the line.
    """
    found: dict[str, str] = {}
    for line in text.splitlines():
        matches = list(_KEY_RE.finditer(line))
        for i, m in enumerate(matches):
            key = m.group(1)
            if key in _LINE_KEYS and (key != "Reason" or i == len(matches) - 1):
                value = line[m.end() :]
                found.setdefault(key, value.rstrip())
                break
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            found.setdefault(key, line[m.end() : end].strip())
    return found


def scontrol_job(text: str) -> Job:
    """``scontrol show job ID`` (one job) as a Job. Raises SlurmOutputError."""
    kv = key_values(text)
    if "JobId" not in kv:
        raise SlurmOutputError("scontrol show job", text, "no JobId")
    state = _base_state(kv.get("JobState", ""))
    code, sig = exit_status(kv.get("ExitCode", ""))
    if state not in _ENDED:
        code, sig = None, None
    user = kv.get("UserId", "")
    uid = re.search(r"\((\d+)\)", user)
    return Job(
        job_id=int(kv["JobId"]),
        name=kv.get("JobName", ""),
        state=state,
        reason=_text_or_none(kv.get("Reason")),
        nodes=expand_hostlist(kv.get("NodeList", "")),
        exit_code=code,
        signal=sig,
        comment=_text_or_none(kv.get("Comment")),
        user_id=int(uid.group(1)) if uid else None,
        partition=_text_or_none(kv.get("Partition")),
        priority=_int_or_none(kv.get("Priority")),
    )


_JOBCOMP_KEY_RE = re.compile(r"(?:^| )([A-Za-z]+)=")


def jobcomp(text: str) -> list[FinishedJob]:
    """The jobcomp/filetxt file: one ``Key=Value ...`` line per finished job.

    A value holding `` Key=`` (a WorkDir with such a name) would be cut there;
    the fields read here (ids, state, codes, nodes, times) never do.
    """
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        matches = list(_JOBCOMP_KEY_RE.finditer(line))
        kv: dict[str, str] = {}
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            kv.setdefault(m.group(1), line[m.end() : end].strip())
        job_id = _int_or_none(kv.get("JobId"))
        if job_id is None:
            raise SlurmOutputError("jobcomp file", line, "a line without JobId")
        user = kv.get("UserId", "")
        m_uid = re.fullmatch(r"(.*)\((\d+)\)", user)
        code, sig = exit_status(kv.get("ExitCode", ""))
        jobs.append(
            FinishedJob(
                job_id=job_id,
                name=kv.get("Name", ""),
                state=_base_state(kv.get("JobState", "")),
                user=m_uid.group(1) if m_uid else _text_or_none(user),
                user_id=int(m_uid.group(2)) if m_uid else None,
                exit_code=code,
                signal=sig,
                nodes=expand_hostlist(kv.get("NodeList", "")),
                start=_text_or_none(kv.get("StartTime")),
                end=_text_or_none(kv.get("EndTime")),
            )
        )
    return jobs
