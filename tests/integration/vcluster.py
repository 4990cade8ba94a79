"""What the virtual-cluster tests share: the skip marks, clusters, users, polling.

Each cluster test module brings up its own cluster through :class:`Clusters`
(the ``vcluster`` fixture of ``conftest.py``): a state dir made by
:func:`state_dir` and :func:`launcher.isolation.init_isolated`, so suites run
beside each other, and a teardown that always runs ``beoctl cluster down``;
what a module does with its cluster stays in the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w

from launcher.isolation import init_isolated
from launcher.slurm.adapter import SlurmCli
from launcher.slurm.paths import SlurmPaths
from launcher.slurm.types import Job as SlurmJob

BIN = Path(sys.executable).parent
#: What every virtual cluster needs on PATH (iproute2, util-linux).
CLUSTER = ("ip", "nsenter")
#: ... and one with Slurm (slurm-wlm, munge).
SLURM = (*CLUSTER, "slurmctld", "slurmd", "munged")
#: Slurm job states a job has not ended in.
_RUNNING = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")


def needs_root_and(*programs: str, reason: str) -> list[pytest.MarkDecorator]:
    """``pytestmark`` of a cluster test: slow, and skipped (``reason``) unless run
    as root with every one of ``programs`` on PATH."""
    missing = os.geteuid() != 0 or not all(shutil.which(p) for p in programs)
    return [pytest.mark.slow, pytest.mark.skipif(missing, reason=reason)]


@dataclass(frozen=True)
class Poll:
    """``poll(what, check)``: ``check()``'s first truthy answer, asked every
    ``interval`` s; fails naming ``what`` after ``seconds`` (not asserted)."""

    seconds: float
    interval: float = 0.1

    def __call__(self, what: str, check: Callable[[], Any], seconds: float | None = None) -> Any:
        limit = self.seconds if seconds is None else seconds
        deadline = time.monotonic() + limit
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {limit:.0f} s")
            time.sleep(self.interval)


def state_dir(prefix: str) -> tuple[str, Path]:
    """A random tag and a new state dir ``/tmp/PREFIX-TAG-*`` (0755: node agents
    and users read below it)."""
    tag = secrets.token_hex(2)
    state = Path(tempfile.mkdtemp(prefix=f"{prefix}-{tag}-"))
    state.chmod(0o755)
    return tag, state


def add_user(name: str, *, home: bool = True) -> pwd.struct_passwd:
    """A new user ``name``: with a home and /bin/sh, or (``home=False``) with
    neither (nologin: jobs run as it, nobody logs in); its passwd entry."""
    if home:
        argv = ["useradd", "-m", "-s", "/bin/sh", name]
    else:
        argv = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    subprocess.run(argv, check=True, capture_output=True)
    return pwd.getpwnam(name)


def remove_user(name: str, *, home: bool = True) -> None:
    """Remove ``name`` (and with ``home`` its home); nothing when there is no such user."""
    subprocess.run(["userdel", *(["-r"] if home else []), name], capture_output=True, check=False)


@dataclass(frozen=True)
class User:
    """A user a test made: its name, ids and home."""

    name: str
    uid: int
    gid: int
    home: str


@contextlib.contextmanager
def home_user(prefix: str) -> Iterator[User]:
    """A new user ``PREFIX<8 hex>`` with a home and /bin/sh (:func:`add_user`),
    removed with its home afterwards."""
    name = f"{prefix}{secrets.token_hex(4)}"
    account = add_user(name)
    try:
        yield User(name, account.pw_uid, account.pw_gid, account.pw_dir)
    finally:
        remove_user(name)


def namespaces_left(prefix: str) -> list[str]:
    """The network namespaces named ``prefix...`` (none when ``prefix`` is empty)."""
    return [n for n in os.listdir("/run/netns") if prefix and n.startswith(prefix)]


def ended(cli: SlurmCli, job_id: int) -> SlurmJob | None:
    """The Slurm job once it has ended, else None."""
    job = cli.job(job_id)
    return job if job.state not in _RUNNING else None


def beosub_as(
    user: str, config: Path, cwd: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``beosub ARGS`` run by ``user`` from ``cwd`` with cluster ``config``."""
    argv = ["runuser", "-u", user, "--", "env", f"BEOLAUNCH_CONFIG={config}"]
    return subprocess.run(
        [*argv, str(BIN / "beosub"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def admin_run(
    config: Path, script: str, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """An admin command (``beoctl``, ``beoacct``...) as root with ``--config``."""
    return subprocess.run(
        [str(BIN / script), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: How long ``cluster up`` and ``cluster down`` may take (s; a Slurm cluster on a
#: loaded machine takes a minute).
UP_DOWN_S = 300


def module_prefix(module: str) -> str:
    """``beo`` and up to 6 letters of a test module's name, 3 a word when it has
    several: ``tests.integration.test_slurm_step`` -> ``beosluste``. Names of
    state dirs and users start with it; short, as socket paths below the state
    dir (Slurm's, PMIx's) have a limit of 107 bytes."""
    words = [re.sub(r"[^a-z0-9]", "", w.lower()) for w in module.rsplit(".", 1)[-1].split("_")]
    words = [w for w in words if w and w != "test"]
    short = "".join(w[:3] for w in words) if len(words) > 1 else "".join(words)
    return f"beo{short[:6]}"


def processes_of(state: Path) -> list[str]:
    """Command lines of live processes that name this state dir: its master,
    node agents, munged, slurmctld and slurmds (none may outlive ``cluster down``)."""
    mine = str(state)
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["status"] != psutil.STATUS_ZOMBIE and mine in cmd:
            found.append(cmd)
    return found


@dataclass(frozen=True)
class Cluster:
    """A virtual cluster that is up: its state dir, config, tag (of its names)
    and the prefix of its nodes' network namespaces."""

    state: Path
    config: Path
    tag: str
    netns_prefix: str

    @property
    def slurm(self) -> SlurmPaths:
        """Where its Slurm keeps slurm.conf, logs and the jobcomp file."""
        return SlurmPaths.of_state(self.state)

    def slurm_cli(self) -> SlurmCli:
        """The scheduler adapter's command backend on its Slurm."""
        return SlurmCli(self.slurm.env(), self.slurm.jobcomp)

    def beoctl(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``beoctl --config CONFIG ARGS`` as root."""
        return admin_run(self.config, "beoctl", *args, timeout=timeout)


@dataclass(frozen=True)
class E2E:
    """A cluster and a user who submits to it from ``work``."""

    state: Path
    config: Path
    user: str
    uid: int
    work: Path  # readable by the user: jobs are submitted from here
    tag: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "BEOLAUNCH_CONFIG": str(self.config)}

    def user_argv(self, script: str, *args: str) -> list[str]:
        return [
            "runuser",
            "-u",
            self.user,
            "--",
            "env",
            f"BEOLAUNCH_CONFIG={self.config}",
            str(BIN / script),
            *args,
        ]

    def beosub(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``beosub ARGS`` as the test user, from the work dir."""
        return subprocess.run(
            self.user_argv("beosub", *args),
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def beosub_bg(self, *args: str) -> subprocess.Popen[str]:
        """``beosub ARGS`` as the test user in its own session (a terminal's job)."""
        return subprocess.Popen(
            self.user_argv("beosub", *args),
            cwd=self.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def admin(self, script: str, *args: str, check: bool = True) -> str:
        """An admin command (as root); its stdout."""
        done = subprocess.run(
            [str(BIN / script), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{script} {' '.join(args)}: {done.stderr}{done.stdout}")
        return done.stdout

    def json(self, script: str, *args: str) -> Any:
        return json.loads(self.admin(script, *args, "--json"))


class Clusters:
    """The virtual clusters, users and scratch of one test module, all freed by
    :meth:`close` in this order: each cluster's ``beoctl cluster down`` (also
    for one whose set-up failed halfway), then what :meth:`after_down` was
    given and the users (last made first), then a check that no process of a
    cluster's state dir and no namespace of it is left, then the state dirs.
    Every step runs even when one before it failed; a failed ``down`` or
    check fails the teardown."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._stack = contextlib.ExitStack()
        # Entered first, closed last: what is closed later is entered earlier.
        self._dirs = self._stack.enter_context(contextlib.ExitStack())
        self._after = self._stack.enter_context(contextlib.ExitStack())
        self._downs = self._stack.enter_context(contextlib.ExitStack())

    def __enter__(self) -> Clusters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def __call__(
        self,
        nodes: int,
        *,
        slurm: bool = False,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        database_url: str | None = None,
    ) -> Cluster:
        """A ``nodes``-node cluster in a state dir of its own (``init_isolated``;
        with ``slurm``, a Slurm of its own too, ``cluster up --slurm``);
        ``settings`` are tables merged into its config before ``cluster up``."""
        tag, state = state_dir(self.prefix)
        self._dirs.callback(shutil.rmtree, state, ignore_errors=True)
        config = state / "config.toml"
        made: list[Cluster] = []
        self._dirs.callback(_nothing_left, state, made)
        self._downs.callback(_down, config)
        isolation = init_isolated(state, tag, database_url=database_url, slurm=slurm)
        if settings:
            doc = tomllib.loads(config.read_text("utf-8"))
            for table, values in settings.items():
                doc.setdefault(table, {}).update(values)
            config.write_text(tomli_w.dumps(doc), "utf-8")
        config.chmod(0o644)  # users submit with it
        cluster = Cluster(state, config, tag, isolation.netns_prefix)
        made.append(cluster)
        up = cluster.beoctl(
            "cluster", "up", "-n", str(nodes), *(["--slurm"] if slurm else []), timeout=UP_DOWN_S
        )
        logs = "".join(
            f"\n--- {log}:\n" + log.read_text()[-2000:]
            for log in cluster.slurm.log_dir.glob("*.log")
        )
        assert up.returncode == 0, up.stderr + up.stdout + logs
        return cluster

    def user(self, *, home: bool = True) -> pwd.struct_passwd:
        """A new user named ``PREFIX<hex>`` (see :func:`add_user`), removed after
        the clusters are down."""
        name = f"{self.prefix}{secrets.token_hex(2)}"
        account = add_user(name, home=home)
        self._after.callback(remove_user, name, home=home)
        return account

    def after_down(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Call ``fn(*args, **kwargs)`` at teardown, once the clusters are down."""
        self._after.callback(fn, *args, **kwargs)

    def e2e(
        self,
        nodes: int,
        *,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        database_url: str | None = None,
    ) -> E2E:
        """A cluster (no Slurm) and a user without a home who submits from a
        0755 work dir under /tmp."""
        work = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-work-"))
        self.after_down(shutil.rmtree, work, ignore_errors=True)
        work.chmod(0o755)
        account = self.user(home=False)
        cluster = self(nodes, settings=settings, database_url=database_url)
        return E2E(
            cluster.state, cluster.config, account.pw_name, account.pw_uid, work, cluster.tag
        )


def _down(config: Path) -> None:
    """``beoctl cluster down`` of a cluster whose config was written; fails when it failed."""
    if not config.exists():
        return  # init failed before it wrote anything to bring down
    down = admin_run(config, "beoctl", "cluster", "down", timeout=UP_DOWN_S)
    assert down.returncode == 0, down.stderr


def _nothing_left(state: Path, made: list[Cluster]) -> None:
    """Fails when a process naming ``state`` or a namespace of the cluster is
    left once it is down and what the module built on it is freed."""
    left = processes_of(state)
    spaces = namespaces_left(made[0].netns_prefix) if made else []
    assert left == [], f"processes left after cluster down: {left}"
    assert spaces == [], f"namespaces left after cluster down: {spaces}"
