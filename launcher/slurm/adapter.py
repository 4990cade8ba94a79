"""One interface to Slurm, two backends: the Slurm commands and pyslurm.

Everything returns typed dataclasses, whichever backend answers. :func:`backend`
picks pyslurm when it imports and was built for the Slurm that runs here
(``sinfo --version``), else the commands (:class:`SlurmCli`), which is what
Debian 12 (Slurm 22.05, no matching pyslurm on PyPI) gets.

Slurm 22.05 quirks this works around: ``squeue --json`` ignores ``-j`` and
``-t`` (it returns every job it knows, so we filter), ``scontrol`` has no
``--json`` (``scontrol show job`` is parsed from ``Key=Value`` text), and
without slurmdbd ``sacct`` is disabled: finished jobs come from the
jobcomp/filetxt file instead.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from launcher.errors import SlurmCommandError, SlurmError
from launcher.slurm import parse
from launcher.slurm.types import FinishedJob, Job, NodeInfo, StepResult

__all__ = [
    "FinishedJob",
    "Job",
    "NodeInfo",
    "PySlurm",
    "Scheduler",
    "SlurmCli",
    "StepResult",
    "backend",
]

COMMAND_TIMEOUT_S = 60.0


class Scheduler(Protocol):
    """What Beolaunch asks of Slurm. Every method raises SlurmError on failure
    (SlurmCommandError naming the command, exit status and stderr)."""

    def version(self) -> str:
        """The Slurm version that answers, e.g. ``22.05.8``."""
        ...

    def submit(self, options: Sequence[str], script: str | None = None) -> int:
        """``sbatch OPTIONS`` with ``script`` on stdin (or ``--wrap`` in options); the job id."""
        ...

    def jobs(self, job_ids: Collection[int] | None = None) -> list[Job]:
        """Jobs slurmctld still knows (all, or those in ``job_ids``), by id."""
        ...

    def job(self, job_id: int) -> Job:
        """One job slurmctld knows; NotFound is a SlurmError too."""
        ...

    def cancel(self, job_id: int, signal: str | None = None) -> None: ...

    def release(self, job_id: int) -> None: ...

    def update(self, job_id: int, fields: Mapping[str, str]) -> None:
        """``scontrol update JobId=ID KEY=VALUE...`` (e.g. ``StartTime=now``)."""
        ...

    def nodes(self) -> list[NodeInfo]: ...

    def finished(self, job_ids: Collection[int] | None = None) -> list[FinishedJob]:
        """Finished jobs from accounting (jobcomp/filetxt here), oldest first."""
        ...

    def run(self, options: Sequence[str], timeout: float | None = None) -> StepResult:
        """``srun OPTIONS`` to its end (interactive steps need srun, whichever backend)."""
        ...


def _slurm_cmd(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    stdin: str | None = None,
    timeout: float | None = COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SlurmCommandError(list(argv), 127, f"{exc}; is slurm-client installed?") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmCommandError(list(argv), -1, f"no answer within {timeout} s") from exc


@dataclass(frozen=True)
class SlurmCli:
    """The Slurm commands. ``env`` is their environment (SLURM_CONF when the
    config is not in /etc/slurm); ``jobcomp`` the jobcomp/filetxt file, when
    accounting has no slurmdbd."""

    env: Mapping[str, str] | None = None
    jobcomp: Path | None = None

    def _out(self, *argv: str, stdin: str | None = None) -> str:
        done = _slurm_cmd(argv, self.env, stdin)
        if done.returncode != 0:
            raise SlurmCommandError(list(argv), done.returncode, done.stderr)
        return done.stdout

    def version(self) -> str:
        return parse.version(self._out("sinfo", "--version"))

    def submit(self, options: Sequence[str], script: str | None = None) -> int:
        return parse.sbatch_job_id(self._out("sbatch", "--parsable", *options, stdin=script))

    def jobs(self, job_ids: Collection[int] | None = None) -> list[Job]:
        # 22.05 ignores -j with --json: ask for all, keep ours.
        found = parse.squeue_json(self._out("squeue", "--json"))
        if job_ids is not None:
            wanted = set(job_ids)
            found = [j for j in found if j.job_id in wanted]
        return found

    def job(self, job_id: int) -> Job:
        return parse.scontrol_job(self._out("scontrol", "show", "job", str(job_id)))

    def cancel(self, job_id: int, signal: str | None = None) -> None:
        self._out("scancel", *([f"--signal={signal}"] if signal else []), str(job_id))

    def release(self, job_id: int) -> None:
        self._out("scontrol", "release", str(job_id))

    def update(self, job_id: int, fields: Mapping[str, str]) -> None:
        for key in fields:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
                raise SlurmError(f"scontrol update: field name {key!r} is not a Slurm key")
        pairs = [f"{k}={v}" for k, v in fields.items()]
        self._out("scontrol", "update", f"JobId={job_id}", *pairs)

    def nodes(self) -> list[NodeInfo]:
        return parse.sinfo_json(self._out("sinfo", "--json"))

    def finished(self, job_ids: Collection[int] | None = None) -> list[FinishedJob]:
        if self.jobcomp is None:
            raise SlurmError(
                "finished jobs: no jobcomp file given; without slurmdbd Beolaunch reads "
                "JobCompLoc of jobcomp/filetxt"
            )
        try:
            text = self.jobcomp.read_text(errors="replace")
        except FileNotFoundError:
            text = ""  # no job has finished yet
        except OSError as exc:
            raise SlurmError(f"cannot read the jobcomp file {self.jobcomp}: {exc}") from exc
        found = parse.jobcomp(text)
        if job_ids is not None:
            wanted = set(job_ids)
            found = [j for j in found if j.job_id in wanted]
        return found

    def run(self, options: Sequence[str], timeout: float | None = None) -> StepResult:
        argv = ["srun", *options]
        done = _slurm_cmd(argv, self.env, timeout=timeout)
        return StepResult(shlex.join(argv), done.returncode, done.stdout, done.stderr)


class PySlurm:
    """pyslurm, for the Slurm release it was built against. Steps (``run``) and
    finished jobs still go through the commands: pyslurm has no srun, and
    reading jobcomp needs no library."""

    def __init__(self, module: Any, cli: SlurmCli) -> None:
        self._pyslurm = module
        self._cli = cli

    def version(self) -> str:
        return built_for(self._pyslurm)

    def submit(self, options: Sequence[str], script: str | None = None) -> int:
        # pyslurm's job description API changes with every release; sbatch's
        # option parsing is the one every site documents. Same answer either way.
        return self._cli.submit(options, script)

    def jobs(self, job_ids: Collection[int] | None = None) -> list[Job]:
        try:
            found = [parse.job_from_mapping(d) for d in self._pyslurm.job().get().values()]
        except (ValueError, self._error()) as exc:
            raise SlurmError(f"pyslurm job().get(): {exc}") from exc
        if job_ids is not None:
            wanted = set(job_ids)
            found = [j for j in found if j.job_id in wanted]
        return sorted(found, key=lambda j: j.job_id)

    def job(self, job_id: int) -> Job:
        try:
            found = self._pyslurm.job().find_id(str(job_id))
        except (ValueError, self._error()) as exc:
            raise SlurmError(f"pyslurm job().find_id({job_id}): {exc}") from exc
        if not found:
            raise SlurmError(f"job {job_id}: slurmctld does not know it (finished long ago?)")
        return parse.job_from_mapping(found[0])

    def cancel(self, job_id: int, signal: str | None = None) -> None:
        self._cli.cancel(job_id, signal)

    def release(self, job_id: int) -> None:
        self._cli.release(job_id)

    def update(self, job_id: int, fields: Mapping[str, str]) -> None:
        self._cli.update(job_id, fields)

    def nodes(self) -> list[NodeInfo]:
        try:
            rows = self._pyslurm.node().get().values()
        except self._error() as exc:
            raise SlurmError(f"pyslurm node().get(): {exc}") from exc
        return sorted((parse.node_from_mapping(d) for d in rows), key=lambda n: n.name)

    def finished(self, job_ids: Collection[int] | None = None) -> list[FinishedJob]:
        return self._cli.finished(job_ids)

    def run(self, options: Sequence[str], timeout: float | None = None) -> StepResult:
        return self._cli.run(options, timeout)

    def _error(self) -> type[BaseException]:
        error = getattr(self._pyslurm, "PyslurmError", None)
        return error if isinstance(error, type) and issubclass(error, BaseException) else OSError


def release(version: str) -> tuple[int, ...]:
    """The major release of a Slurm version: ``22.05.8`` and pyslurm's ``22.5.3`` -> (22, 5)."""
    parts = re.findall(r"\d+", version)[:2]
    return tuple(int(p) for p in parts)


def built_for(module: Any) -> str:
    """The Slurm version a pyslurm module was built against.

    ``slurm_api_version()`` (a tuple such as (22, 5, 8)) where pyslurm has it,
    else its own ``version()``, which follows Slurm's numbering (22.5.x).
    """
    api = getattr(module, "slurm_api_version", None)
    if callable(api):
        return ".".join(str(p) for p in api())
    return str(module.version())


def backend(
    env: Mapping[str, str] | None = None,
    jobcomp: Path | None = None,
    *,
    module: Any = None,
) -> Scheduler:
    """pyslurm when it imports and matches ``sinfo --version``'s release; else the commands.

    ``module`` stands in for ``import pyslurm`` (tests). Raises SlurmCommandError
    only when pyslurm imports and ``sinfo --version`` fails.
    """
    cli = SlurmCli(env, jobcomp)
    if module is None:
        try:
            import pyslurm  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            return cli
        module = pyslurm
    try:
        version = built_for(module)
    except Exception:  # a broken build: the commands still work
        return cli
    return PySlurm(module, cli) if release(version) == release(cli.version()) else cli
