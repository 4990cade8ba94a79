"""``beonode step``: a job step enters its environment root as an ordinary user.

The root is real (closure resolver, snapshot into a store, node cache, then
``EnvRoot.create``, FUSE where /dev/fuse exists, else the farm), the user is
made here (``useradd``) and removed after, and the launcher runs AS that user
(``setpriv``, which execs: the launcher's pid is the one we started), with no
privilege at all: its own user and mount namespace. Needs root (to build the
root and the user), gcc, useradd, setpriv and unprivileged user namespaces.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cachefs.cache import NodeCache
from cachefs.closure import resolve
from cachefs.dirsource import DirectorySource
from cachefs.manifest import Manifest
from cachefs.snapshot import snapshot
from cachefs.store import Store
from cachefs.view.farm import build_farm
from cachefs.view.tree import Tree
from launcher.node.roots.envroot import EnvRoot
from launcher.node.roots.sitebinds import plan_binds
from launcher.node.tasks import enter_step
from tests.integration import vcluster as vc
from tests.integration.vcluster import User


def _userns_ok() -> bool:
    return Path("/proc/sys/user/max_user_namespaces").read_text().strip() != "0"


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not all(shutil.which(p) for p in ("gcc", "useradd", "setpriv"))
    or not _userns_ok(),
    reason="needs root (to build roots and users), gcc, useradd, setpriv, user namespaces",
)

PATH = "/usr/bin:/bin"
BEONODE = str(Path(sys.executable).with_name("beonode"))
LIB_SRC = 'const char *probe_version(void) { return "%s"; }\n'
# Found only through $ORIGIN, which glibc resolves by reading /proc/self/exe.
PROBE_SRC = r"""
#include <stdio.h>
#include <unistd.h>
const char *probe_version(void);
int main(void) {
    printf("%s uid=%d gid=%d\n", probe_version(), getuid(), getgid());
    return 0;
}
"""


@dataclass(frozen=True)
class Setup:
    root: EnvRoot
    cache: NodeCache
    work: Path
    probe: str
    #: Submitted from a world-readable dir under /tmp, and from the home; both changed since.
    tmp_script: str
    home_script: str
    #: A host file that is not in the manifest.
    host_only: str


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    with vc.home_user("beos") as made:
        yield made


def _build_probe(where: Path, version: str) -> Path:
    (where / "src").mkdir(parents=True, exist_ok=True)
    (where / "lib").mkdir(exist_ok=True)
    (where / "bin").mkdir(exist_ok=True)
    (where / "src/lib.c").write_text(LIB_SRC % version)
    (where / "src/probe.c").write_text(PROBE_SRC)
    lib, probe = where / "lib/libprobe.so", where / "bin/probe"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, where / "src/lib.c"], check=True)
    subprocess.run(
        [
            *("gcc", "-o", str(probe), str(where / "src/probe.c"), f"-L{where / 'lib'}"),
            *("-lprobe", "-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../lib"),
        ],
        check=True,
    )
    return probe


@pytest.fixture(
    scope="module", params=["fuse", "farm"] if os.path.exists("/dev/fuse") else ["farm"]
)
def setup(request: pytest.FixtureRequest, user: User) -> Iterator[Setup]:
    # Under /var/tmp, readable by the user: the store, cache, roots and probe.
    work = Path(tempfile.mkdtemp(prefix="beostep-", dir="/var/tmp"))
    # Under /tmp, traversable by the user: a script submitted from there.
    submit_tmp = Path(tempfile.mkdtemp(prefix="beostep-", dir="/tmp"))
    host_only = Path(f"/etc/beostep-host-only-{secrets.token_hex(4)}")
    cache: NodeCache | None = None
    root: EnvRoot | None = None
    try:
        for d in (work, submit_tmp):
            d.chmod(0o755)
        probe = _build_probe(work / "probe", "v1")
        tmp_script = submit_tmp / "scripts/hello.sh"
        home_script = Path(user.home, "bin/hello.sh")
        for script in (tmp_script, home_script):
            script.parent.mkdir(exist_ok=True)
            script.write_text(f"echo submitted {script.parent.name}\n")
        os.chown(home_script.parent, user.uid, user.gid)
        os.chown(home_script, user.uid, user.gid)
        env = {"PATH": PATH}
        paths: set[str] = set()
        for program in ("/bin/sh", str(probe)):
            paths.update(resolve(program, env=env).paths)
        store = Store(work / "store")
        manifest: Manifest = snapshot(
            str(probe), sorted(paths | {str(tmp_script), str(home_script)}), store
        )
        # The host changes after submission: the step must not see it.
        for script in (tmp_script, home_script):
            script.write_text("echo replaced since\n")
        _build_probe(work / "probe", "v2")
        host_only.write_text("on the host only\n")
        cache = NodeCache(work / "cache", 1 << 30)
        asyncio.run(cache.fill(manifest.objects(), [DirectorySource(work / "store")], job="j"))
        root = EnvRoot.create(
            manifest, cache, work / "roots", "job", variant=request.param, home=user.home
        )
        assert root.variant == request.param
        yield Setup(
            root, cache, work, str(probe), str(tmp_script), str(home_script), str(host_only)
        )
    finally:
        if root is not None:
            root.remove()
        if cache is not None:
            cache.close()
        host_only.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(submit_tmp, ignore_errors=True)


@pytest.fixture
def job_tmp() -> Iterator[Path]:
    """The job's tmp as the agent makes it (mode 1777) in a dir the user can reach."""
    where = Path(tempfile.mkdtemp(prefix="beostep-jobtmp-", dir="/var/tmp"))
    where.chmod(0o1777)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def as_user(user: User, argv: list[str]) -> list[str]:
    # setpriv execs (runuser would fork): the pid we start is the launcher's.
    return [
        "setpriv",
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--init-groups",
        "--",
        *argv,
    ]


def step(
    user: User | None,
    setup: Setup,
    job_tmp: Path,
    program: list[str],
    *options: str,
    console: bool = False,
) -> list[str]:
    root, tmp = str(setup.root.path), str(job_tmp)
    if console:
        argv = [BEONODE, "step", "--root", root, "--tmp", tmp, *options, "--", *program]
    else:
        argv = enter_step.command(root, tmp, program)
        argv[-len(program) - 1 : -len(program) - 1] = list(options)
    return argv if user is None else as_user(user, argv)


def run(argv: list[str], user: User | None, **env: str) -> subprocess.CompletedProcess[str]:
    home = user.home if user else "/root"
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={"PATH": PATH, "HOME": home, **env},
        cwd=home,
        timeout=60,
        check=False,
    )


def test_runs_in_the_root_as_the_user_with_proc(setup: Setup, user: User, job_tmp: Path) -> None:
    script = (
        f'{setup.probe}; echo "$$"; [ -e {setup.host_only} ] && echo host-file-visible; '
        f'[ -e {sys.executable} ] && echo venv-visible; echo "$SLURM_JOB_ID"; '
        'echo "$PWD"; read -r line < /proc/self/comm; echo "$line"; '
        'while read -r key value; do [ "$key" = SigIgn: ] && echo "$value"; '
        "done < /proc/self/status; exit 0"
    )
    proc = subprocess.Popen(
        step(user, setup, job_tmp, ["/bin/sh", "-c", script]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": PATH, "HOME": user.home, "SLURM_JOB_ID": "4242"},
        cwd=user.home,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    probe, pid, slurm, pwd, comm, ignored = out.splitlines()
    # The submitted library, found through $ORIGIN (so /proc/self/exe works), as the user.
    assert probe == f"v1 uid={user.uid} gid={user.gid}"
    assert pid == str(proc.pid)  # the launcher exec'd: the program is the process we started
    assert (slurm, pwd, comm) == ("4242", user.home, "sh")
    # Python's SIG_IGN of SIGPIPE/SIGXFSZ did not leak (SigIgn bit N-1 is signal N;
    # other bits are whatever the test's own parent ignores, which a step keeps)
    python_ignores = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
    assert int(ignored, 16) & python_ignores == 0
    assert err == ""


def test_what_it_writes_in_tmp_lands_in_the_jobs_tmp_as_the_user(
    setup: Setup, user: User, job_tmp: Path
) -> None:
    done = run(step(user, setup, job_tmp, ["/bin/sh", "-c", "echo hi > /tmp/out"]), user)
    assert done.returncode == 0, done.stderr
    made = (job_tmp / "out").stat()
    assert (made.st_uid, made.st_gid) == (user.uid, user.gid)
    assert (job_tmp / "out").read_text() == "hi\n"


def test_submitted_files_are_shown_over_tmp_and_home(
    setup: Setup, user: User, job_tmp: Path
) -> None:
    argv = ["/bin/sh", "-c", f"sh {setup.tmp_script}; sh {setup.home_script}; echo x > ~/new"]
    done = run(step(user, setup, job_tmp, argv), user)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "submitted scripts\nsubmitted bin\n"
    # The rest of the home is the host's, bound in: what the step writes stays, as the user.
    new = Path(user.home, "new")
    assert new.stat().st_uid == user.uid
    new.unlink()
    assert Path(setup.home_script).read_text() == "echo replaced since\n"  # host copy untouched


def test_exit_status_and_signals_propagate(setup: Setup, user: User, job_tmp: Path) -> None:
    assert run(step(user, setup, job_tmp, ["/bin/sh", "-c", "exit 7"]), user).returncode == 7
    # A signal from outside (slurmstepd's, scancel's) reaches the program itself.
    proc = subprocess.Popen(
        step(user, setup, job_tmp, ["/bin/sh", "-c", "echo ready; read -r line"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": PATH},
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_the_user_cannot_write_into_the_root(setup: Setup, user: User, job_tmp: Path) -> None:
    argv = ["/bin/sh", "-c", "echo x >> /bin/sh; echo x > /new-file; echo x > /proc/../bin/x"]
    done = run(step(user, setup, job_tmp, argv), user)
    assert done.returncode != 0
    assert done.stderr.count("Read-only file system") + done.stderr.count("denied") == 3
    assert not (setup.root.path / "new-file").exists()


def test_a_missing_program_exits_127_naming_it(setup: Setup, user: User, job_tmp: Path) -> None:
    done = run(step(user, setup, job_tmp, ["ls", "/"]), user)  # ls is not in the manifest
    assert done.returncode == enter_step.EXIT_NOT_FOUND
    assert done.stderr == (
        f"beonode step: find program failed: ls is not an executable file in the root "
        f"in PATH={PATH}\n"
    )


def test_a_missing_cwd_falls_back_to_home(setup: Setup, user: User, job_tmp: Path) -> None:
    done = run(step(user, setup, job_tmp, ["/bin/sh", "-c", "pwd"], "--cwd", "/no/such"), user)
    assert (done.returncode, done.stdout) == (0, f"{user.home}\n")
    assert (
        done.stderr
        == f"beonode step: cwd /no/such is missing in the root; running in {user.home}\n"
    )


def test_root_is_refused_unless_allowed(setup: Setup, job_tmp: Path) -> None:
    done = run(step(None, setup, job_tmp, ["/bin/sh", "-c", "echo ran"]), None)
    assert (done.returncode, done.stdout) == (enter_step.EXIT_REFUSED, "")
    assert done.stderr.startswith("beonode step: refuse root failed: beonode step runs as")
    allowed = run(step(None, setup, job_tmp, ["/bin/sh", "-c", "echo ran"], "--allow-root"), None)
    assert (allowed.returncode, allowed.stdout) == (0, "ran\n"), allowed.stderr


def test_a_failed_step_names_step_and_path(setup: Setup, user: User) -> None:
    # A farm without mount points: the bind of /proc has nowhere to go.
    bare = setup.work / "roots" / f"bare-{secrets.token_hex(2)}"
    build_farm(Tree.from_manifest(setup.root.manifest, setup.cache.object_path), bare)
    job_tmp = setup.work / "bare-tmp"
    job_tmp.mkdir(mode=0o1777, exist_ok=True)
    try:
        argv = enter_step.command(str(bare), str(job_tmp), ["/bin/sh", "-c", "exit 0"])
        done = run(as_user(user, argv), user)
    finally:
        EnvRoot.remove_path(bare)
    assert done.returncode == enter_step.EXIT_CANNOT_ENTER
    assert done.stderr == (
        f"beonode step: mount /proc failed: mount /proc on {bare}/proc: No such file or directory\n"
    )
    missing = run(as_user(user, enter_step.command("/no/root", "/tmp", ["sh"])), user)
    assert (missing.returncode, missing.stderr) == (
        enter_step.EXIT_CANNOT_ENTER,
        "beonode step: check root failed: /no/root: No such file or directory\n",
    )
    # A root the user may not reach: the system's reason, not a guess.
    hidden = setup.work / "hidden"
    hidden.mkdir(mode=0o700)
    denied = run(as_user(user, enter_step.command(str(hidden / "r"), "/tmp", ["sh"])), user)
    assert (denied.returncode, denied.stderr) == (
        enter_step.EXIT_CANNOT_ENTER,
        f"beonode step: check root failed: {hidden}/r: Permission denied\n",
    )


def test_the_console_command(setup: Setup, user: User, job_tmp: Path) -> None:
    done = run(step(user, setup, job_tmp, ["/bin/sh", "-c", "echo $$"], console=True), user)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().isdigit()
    missing = run(step(user, setup, job_tmp, ["ls"], console=True), user)
    assert missing.returncode == enter_step.EXIT_NOT_FOUND
    assert missing.stderr.startswith("beonode: ") and "ls is not an executable" in missing.stderr


def test_site_binds_hold_the_home_and_the_submitted_files_show_over_them(
    setup: Setup, user: User, job_tmp: Path
) -> None:
    # The agent's plan for [envroot] binds = ["/home", SITE]: the home lies under
    # /home, so the root has mount points for the two binds and none for the home.
    site = Path(tempfile.mkdtemp(prefix="beostep-site-", dir="/var/tmp"))
    site.chmod(0o755)
    (site / "data").write_text("site data\n")
    (site / "mine").mkdir()
    os.chown(site / "mine", user.uid, user.gid)
    plan = plan_binds(setup.root.manifest, ["/home", str(site)], user.home)
    assert plan.binds == ("/home", str(site)) and plan.home is None
    root = EnvRoot.create(
        setup.root.manifest, setup.cache, setup.work / "roots", "job-binds", binds=plan.binds
    )
    try:
        script = f'pwd; read -r l < data; echo "$l"; echo w > mine/out; sh {setup.home_script}'
        argv = enter_step.command(
            str(root.path), str(job_tmp), ["/bin/sh", "-c", script], cwd=str(site),
            home=user.home, binds=root.binds,
        )  # fmt: skip
        done = run(as_user(user, argv), user)
        # A bind missing on the node and a home with no mount point: left out in
        # silence (the agent said so once, in the job's events), never in the output.
        gone = enter_step.command(
            str(root.path), str(job_tmp), ["/bin/sh", "-c", "pwd"], home="/home/nobody-here",
            binds=["/no/such/site"],
        )  # fmt: skip
        quiet = run(as_user(user, gone), user)
        out = site / "mine" / "out"
        written = (out.stat().st_uid, out.read_text()) if out.exists() else None
    finally:
        root.remove()
        shutil.rmtree(site, ignore_errors=True)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [str(site), "site data", "submitted bin"]
    assert written == (user.uid, "w\n")
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert quiet.stdout == f"{user.home}\n"  # its cwd (the home, through /home) is there


def test_a_home_missing_on_the_node_is_not_a_line_in_the_output(
    setup: Setup, user: User, job_tmp: Path
) -> None:
    argv = enter_step.command(
        str(setup.root.path), str(job_tmp), ["/bin/sh", "-c", "echo ran"], home="/home/nobody-here"
    )
    done = run(as_user(user, argv), user)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ran\n", "")
