"""Errors raised by the launcher package.

Every error the CLI can show derives from :class:`BeolaunchError`; the console
scripts turn it into ``prog: message`` and an exit code in one place
(:mod:`launcher.cli.entry`).  Subclasses carry the bad input as attributes so
callers can act on it without parsing messages.
"""

from __future__ import annotations

from pathlib import Path


class BeolaunchError(Exception):
    """Base of every error the launcher reports to a user."""

    exit_code = 1


class ConfigError(BeolaunchError):
    """A configuration file is unreadable or holds a bad value."""

    def __init__(self, path: Path, key: str | None, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: key '{key}'" if key else str(path)
        super().__init__(f"{where}: {problem}")


class ConfigMissingError(BeolaunchError):
    """No configuration file where one was looked for."""

    def __init__(self, path: Path, how_found: str) -> None:
        self.path = path
        self.how_found = how_found
        super().__init__(
            f"no configuration at {path} ({how_found}): run 'beoctl init' "
            "(or 'beoctl init --state-dir DIR' and set BEOLAUNCH_CONFIG=DIR/config.toml)"
        )


class InitConflictError(BeolaunchError):
    """``beoctl init`` was asked for something that contradicts what exists."""


class StateError(BeolaunchError):
    """The state database cannot be used as asked."""


class DatabaseUnavailable(StateError):
    """The state database did not answer (down, restarting, unreachable): retry later."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = url
        self.cause = cause
        super().__init__(f"the state database is unavailable ({cause}); retry in a moment")


class SchemaMismatchError(StateError):
    """The database's schema revision is not the one this code expects."""

    def __init__(self, url: str, current: str | None, head: str, advice: str) -> None:
        self.url = url
        self.current = current
        self.head = head
        super().__init__(
            f"database {url} is at schema revision {current or '(none)'}, "
            f"this Beolaunch expects {head}: {advice}"
        )


class NotFoundError(BeolaunchError):
    """A job, node, manifest or object named by the user does not exist."""

    exit_code = 2


# --- virtual cluster (launcher.cluster) ---


class AcctRequestError(BeolaunchError):
    """An accounting question that cannot be asked as put (a bad command or argument)."""


class ReportWriteError(BeolaunchError):
    """``beoacct report`` could not write its page."""

    def __init__(self, path: Path, cause: str) -> None:
        self.path = path
        super().__init__(
            f"cannot write the report to {path}: {cause}; give --out DIR you can write"
        )


class ReportSinceError(BeolaunchError):
    """``beoacct report --since`` is neither a date nor a duration."""

    exit_code = 2

    def __init__(self, text: str, problem: str | None = None) -> None:
        self.text = text
        super().__init__(
            f"--since {text!r}: "
            + (
                problem
                or "expected a date (2026-11-01, 2026-11-01T12:00, UTC unless it carries"
                " an offset) or a duration back from now (90m, 12h, 7d, 4w)"
            )
        )


class ClusterError(BeolaunchError):
    """The virtual cluster could not be brought up, inspected or taken down."""


class ClusterCommandError(ClusterError):
    """A system command (ip, mount, umount, unshare) failed while building or removing it."""

    def __init__(self, argv: list[str], returncode: int, stderr: str, advice: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip() or f"exit status {returncode}"
        super().__init__(f"{' '.join(argv)} failed: {detail}; {advice}")


class ClusterSpecError(ClusterError):
    """``STATE/cluster/cluster.json`` is unreadable, or a cluster was asked for badly."""

    def __init__(self, path: Path | None, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class ClusterProcessError(ClusterError):
    """A node agent or the master could not be started or stopped."""

    def __init__(self, pid_file: Path | None, problem: str) -> None:
        self.pid_file = pid_file
        self.problem = problem
        super().__init__(f"{pid_file}: {problem}" if pid_file else problem)


# --- master (launcher.master) ---


class MasterError(BeolaunchError):
    """The master's user socket could not be reached, or the master refused a request.

    ``status`` is the HTTP status the master answered (None when it was not reached).
    """

    def __init__(self, socket_path: Path, problem: str, status: int | None = None) -> None:
        self.socket_path = socket_path
        self.problem = problem
        self.status = status
        super().__init__(f"master at {socket_path}: {problem}")


class SubmissionError(BeolaunchError):
    """A request on the user socket the master refuses: ``field`` names the bad part
    (a submitted file's path when that file cannot be stored as the manifest says)."""

    def __init__(self, field: str | None, problem: str, status: int = 400) -> None:
        self.field = field
        self.problem = problem
        self.status = status
        super().__init__(f"{field}: {problem}" if field else problem)


# --- node sandbox (environment root, task execution) ---


class SandboxError(BeolaunchError):
    """A job's environment root or task could not be set up on a node."""


class EnvRootError(SandboxError):
    """The environment root of ``job`` at ``path`` could not be built or removed."""

    def __init__(self, job: str, path: Path, problem: str) -> None:
        self.job = job
        self.path = path
        self.problem = problem
        super().__init__(f"environment root of job {job} at {path}: {problem}")


class TaskSpecError(SandboxError):
    """A task's description holds a value the sandbox will not run."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"task {field}={value!r}: {problem}")


class RootTaskRefusedError(TaskSpecError):
    """A task asked to run as uid 0 without the spec allowing it."""

    def __init__(self) -> None:
        super().__init__(
            "uid", 0, "tasks do not run as root; submit as a user (or allow root in the config)"
        )


class TaskSetupError(SandboxError):
    """A step before the task's ``execve`` failed; ``step`` names it (``mount /proc``,
    ``chroot``, ``setuid``, ``find program``, ``execve``...)."""

    def __init__(self, step: str, detail: str, errno: int = 0) -> None:
        self.step = step
        self.detail = detail
        self.errno = errno
        super().__init__(f"task setup failed at {step}: {detail}")


class TaskProgramNotFoundError(TaskSetupError):
    """The program is not an executable file in the environment root."""

    exit_code = 127


# --- node agent ---


class AgentStateError(BeolaunchError):
    """The node agent's state file (``path``: results held for the master) cannot
    be read or written."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"node agent state {path}: {problem}; fix or move the file aside "
            "(results it holds for the master are lost then)"
        )


# --- batch output files (beosub --batch) ---


class OutputPatternError(BeolaunchError):
    """A batch job's output file name (``pattern``) holds a ``%`` sequence we do not know."""

    def __init__(self, pattern: str, problem: str) -> None:
        self.pattern = pattern
        self.problem = problem
        super().__init__(
            f"output file name {pattern!r}: {problem}; use %j (job), %n (node), %t (task), "
            "%u (user), %x (job name) or %% (a percent sign)"
        )


class OutputFileError(BeolaunchError):
    """A batch job's output file (``path``) cannot be opened as the job's user (``uid``)."""

    def __init__(self, path: str, uid: int, problem: str) -> None:
        self.path = path
        self.uid = uid
        self.problem = problem
        super().__init__(f"output file {path}: {problem} (opened as uid {uid}); nothing ran")


class ResponseError(BeolaunchError):
    """An answer on the master's user socket that is not the HTTP we speak (clients wrap
    it in a MasterError naming the socket)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


# --- Slurm (launcher.slurm) ---


class SlurmError(BeolaunchError):
    """Slurm could not be set up, started or asked; subclasses say which."""


class SlurmCommandError(SlurmError):
    """A Slurm command (sbatch, squeue, scontrol, ...) exited non-zero or could not run."""

    def __init__(self, argv: list[str], status: int, stderr: str) -> None:
        self.argv = argv
        self.status = status
        self.stderr = stderr
        detail = stderr.strip() or "no message"
        super().__init__(f"{' '.join(argv)} failed (exit status {status}): {detail}")


class SlurmOutputError(SlurmError):
    """A Slurm command answered with output we cannot understand (``text``: an excerpt)."""

    def __init__(self, command: str, text: str, problem: str) -> None:
        self.command = command
        self.text = text
        self.problem = problem
        super().__init__(
            f"{command}: {problem} in its output {text[:200]!r}; is this Slurm 22.05 or newer?"
        )


class SlurmDaemonError(SlurmError):
    """A Slurm daemon (or munged) of the virtual cluster did not come up; ``log`` says why."""

    def __init__(self, daemon: str, log: Path | None, problem: str) -> None:
        self.daemon = daemon
        self.log = log
        self.problem = problem
        where = f"; see {log}" if log else ""
        super().__init__(f"{daemon}: {problem}{where}")


# --- job steps entered without root (launcher.node.tasks.enter_step, ``beonode step``) ---


class StepRefusedError(SandboxError):
    """``beonode step`` was run as root without ``--allow-root``: root's tasks go
    through the node agent's sandbox."""

    exit_code = 125

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"refuse root failed: {detail}")


class StepEnterError(SandboxError):
    """``beonode step`` could not enter the environment root or exec the program;
    ``step`` names the failed step (``unshare``, ``map uid``, ``mount /proc``,
    ``chroot``, ``execve``...), ``detail`` the path and the system's reason."""

    exit_code = 126

    def __init__(self, step: str, detail: str, errno: int = 0) -> None:
        self.step = step
        self.detail = detail
        self.errno = errno
        super().__init__(f"{step} failed: {detail}")


class StepProgramNotFoundError(StepEnterError):
    """The step's program is not an executable file in the environment root."""

    exit_code = 127


# --- beosub through Slurm (launcher.slurm.submit), runtime hash (launcher.slurm.runtime) ---


class SlurmSubmitError(SlurmError):
    """beosub cannot build the Slurm submission as asked (``detail`` says what)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class RuntimeHashError(SlurmError):
    """The node's runtime (``path``) cannot be hashed for its Slurm feature."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"runtime {path}: {detail}")


# --- Slurm admission: the agent's local socket, prolog, epilog (launcher.node.local) ---


class LocalSocketError(BeolaunchError):
    """The node agent's local socket at ``path`` cannot be reached or answered badly."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"node agent socket {path}: {detail}")


class AdmissionRefusedError(SlurmError):
    """This node did not admit Slurm job ``slurm_job`` (``reason`` says why)."""

    def __init__(self, slurm_job: int, reason: str) -> None:
        self.slurm_job = slurm_job
        self.reason = reason
        super().__init__(f"slurm job {slurm_job} refused on this node: {reason}")


class HookEnvironmentError(SlurmError):
    """The prolog or epilog lacks (or got a bad) Slurm variable ``name``."""

    def __init__(self, name: str, value: str | None) -> None:
        self.name = name
        self.value = value
        super().__init__(
            f"${name} is {'unset' if value is None else repr(value)}: run by slurmd only"
        )


# --- Slurm hooks: the C socket client (launcher.slurm.hookclient) ---


class HookClientBuildError(SlurmError):
    """The hooks' C client (``source``) did not compile with ``compiler``."""

    def __init__(self, source: str, compiler: str, output: str) -> None:
        self.source = source
        self.compiler = compiler
        self.output = output
        super().__init__(
            f"{source}: {compiler} failed: {output.strip() or 'no output'}; "
            "fix the compiler (or remove it from PATH: the hooks then run the Python client)"
        )


# --- beoctl init --isolated (launcher.isolation) ---


class IsolationError(InitConflictError):
    """``beoctl init --isolated`` cannot give a state dir ``what`` of its own (``value``)."""

    def __init__(self, what: str, value: str, problem: str) -> None:
        self.what = what
        self.value = value
        self.problem = problem
        super().__init__(f"{what} {value!r}: {problem}")


# --- Boot: QEMU virtual nodes of the boot lab (launcher.cluster.qemu) ---


class VirtualNodeError(BeolaunchError):
    """QEMU virtual node ``name`` cannot be run: ``problem`` (what to do included)."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"virtual node {name}: {problem}")


# --- Boot: the node's enrollment (launcher.node.boot) ---
# (the boot services' own errors are in bootsvc.errors)


class BootEnvError(BeolaunchError):
    """The boot environment file ``path`` (written by stage 2) is unusable: ``problem``."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"boot environment {path}: {problem}")


class EnrollError(BeolaunchError):
    """Enrolling at ``url`` failed: ``problem``. ``status`` is the HTTP status, or None
    when the master did not answer (retry later)."""

    def __init__(self, url: str, problem: str, status: int | None = None) -> None:
        self.url = url
        self.problem = problem
        self.status = status
        super().__init__(f"enroll at {url}: {problem}")


class EnrollRefusedError(EnrollError):
    """The master refused the boot ticket (403): unknown, used or expired. Only a reboot
    (which fetches a fresh ticket with the iPXE script) gets a new one."""


# --- Boot: accepting nodes and their one-time boot tickets (launcher.master.boot*) ---


class NodeAcceptError(BeolaunchError):
    """The node with MAC ``mac`` cannot be accepted: ``problem`` (what to do included)."""

    def __init__(self, mac: str, problem: str) -> None:
        self.mac = mac
        self.problem = problem
        super().__init__(f"node {mac}: {problem}")


class BootTicketError(BeolaunchError):
    """A boot ticket cannot be traded for a node token: ``problem``. ``node`` is the
    name of the node the ticket was issued to, when the ticket matched one."""

    def __init__(self, problem: str, node: str | None = None) -> None:
        self.problem = problem
        self.node = node
        super().__init__(f"boot ticket: {problem}; reboot the node for a new one")


class TooManyPendingError(BeolaunchError):
    """A new MAC ``mac`` is not made a pending node: ``count`` are pending already, the
    limit (``[boot] max_pending``) is ``limit``."""

    def __init__(self, mac: str, count: int, limit: int) -> None:
        self.mac = mac
        self.count = count
        self.limit = limit
        super().__init__(
            f"node {mac}: {count} nodes are pending already ([boot] max_pending = {limit}); "
            "accept or remove some: beoctl node list --pending"
        )


class NodeRemoveError(BeolaunchError):
    """Node ``node`` cannot be removed: ``problem`` (what to do included)."""

    def __init__(self, node: str, problem: str) -> None:
        self.node = node
        self.problem = problem
        super().__init__(f"node {node}: {problem}")


# --- the master's NFS server (launcher.master.nfsserver, ``beoctl nfs``) ---


class NfsServerError(BeolaunchError):
    """The NFS server cannot serve ``[nfs]`` as asked: ``problem`` (what to do included).
    ``path`` is the export at fault, when one is."""

    def __init__(self, problem: str, path: str | None = None) -> None:
        self.problem = problem
        self.path = path
        super().__init__(f"nfs export {path}: {problem}" if path else f"nfs: {problem}")
