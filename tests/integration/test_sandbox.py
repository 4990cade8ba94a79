"""Tasks run in a job's environment root, on both view variants, as a real user.

The root is made the way a submission makes it: the closure resolver and a
snapshot into a store, a node cache filled from that store, then
``EnvRoot.create``. The user is created here (``useradd``) and removed after.
Needs root (mount, chroot, setuid), /dev/fuse for the FUSE variant, gcc.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import pytest

from cachefs.cache import NodeCache
from cachefs.closure import resolve
from cachefs.dirsource import DirectorySource
from cachefs.manifest import Manifest
from cachefs.snapshot import snapshot
from cachefs.store import Store
from cachefs.view.farm import build_farm
from cachefs.view.tree import Tree
from launcher.errors import RootTaskRefusedError, TaskProgramNotFoundError, TaskSetupError
from launcher.node.roots.envroot import EnvRoot, mounts_under
from launcher.node.roots.sitebinds import plan_binds
from launcher.node.tasks.sandbox import RunningTask, TaskExit, TaskSpec, start_task
from tests.integration import vcluster as vc
from tests.integration.vcluster import User

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("gcc") is None or shutil.which("useradd") is None,
    reason="needs root (mount, chroot, setuid), gcc and useradd",
)

PATH = "/usr/bin:/bin"
PROGRAMS = ("/bin/sh", "id", "hostname", "cat", "sleep", "setsid", "sha256sum", "touch")
LIB_SRC = 'const char *maph_version(void) { return "%s"; }\n'
# Finds the library it mapped in /proc/self/maps, then hands its path to sha256sum.
MAIN_SRC = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
const char *maph_version(void);
int main(void) {
    char line[4096], path[4096] = "";
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) { perror("maps"); return 2; }
    while (fgets(line, sizeof line, maps))
        if (strstr(line, "libmaph.so") && sscanf(line, "%*s %*s %*s %*s %*s %4095s", path) == 1)
            break;
    printf("%s %s\n", maph_version(), path);
    fflush(stdout);
    execl("/usr/bin/sha256sum", "sha256sum", path, (char *)0);
    perror("exec sha256sum");
    return 2;
}
"""


@dataclass(frozen=True)
class Closure:
    manifest: Manifest
    cache: NodeCache
    work: Path
    program: str
    #: sha256 of the library as submitted (the host's copy was replaced since).
    lib_sha: str
    lib_path: str
    #: A script submitted from the host's /tmp (changed there since).
    script: str


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    with vc.home_user("beot") as made:
        yield made


def build_mapper(home: Path, version: str) -> tuple[Path, Path]:
    """~/mapper/bin/maphash, finding ~/mapper/lib/libmaph.so only through $ORIGIN."""
    src, lib_dir, bin_dir = home / "mapper/src", home / "mapper/lib", home / "mapper/bin"
    for d in (src, lib_dir, bin_dir):
        d.mkdir(parents=True, exist_ok=True)
    (src / "maph.c").write_text(LIB_SRC % version)
    (src / "main.c").write_text(MAIN_SRC)
    lib, prog = lib_dir / "libmaph.so", bin_dir / "maphash"
    tmp_lib = lib_dir / "libmaph.so.new"  # replaced by rename: a new inode, as an install does
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", tmp_lib, src / "maph.c"], check=True)
    tmp_lib.rename(lib)
    subprocess.run(
        [
            *("gcc", "-o", str(prog), str(src / "main.c"), f"-L{lib_dir}", "-lmaph"),
            *("-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../lib"),
        ],
        check=True,
    )
    return prog, lib


@pytest.fixture(scope="module")
def closure(user: User, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Closure]:
    work = tmp_path_factory.mktemp("sandbox")
    prog, lib = build_mapper(Path(user.home), "v1")
    env = {"PATH": PATH}
    paths: set[str] = set()
    for program in (*PROGRAMS, str(prog)):
        paths.update(resolve(program, env=env).paths)
    script = work / "scripts" / "hello.sh"
    script.parent.mkdir()
    script.write_text("echo submitted\n")
    store = Store(work / "store")
    manifest = snapshot(str(prog), sorted(paths | {str(script)}), store)
    script.write_text("echo replaced since\n")
    lib_sha = hashlib.sha256(lib.read_bytes()).hexdigest()
    # The master's library changes after submission: the job must not see it.
    build_mapper(Path(user.home), "v2")
    assert hashlib.sha256(lib.read_bytes()).hexdigest() != lib_sha
    cache = NodeCache(work / "cache", 1 << 30)
    asyncio.run(cache.fill(manifest.objects(), [DirectorySource(work / "store")], job="j1"))
    try:
        yield Closure(manifest, cache, work, str(prog), lib_sha, str(lib), str(script))
    finally:
        cache.close()


VARIANTS = ["fuse", "farm"] if os.path.exists("/dev/fuse") else ["farm"]


@pytest.fixture(scope="module", params=VARIANTS)
def root(request: pytest.FixtureRequest, closure: Closure, user: User) -> Iterator[EnvRoot]:
    made = EnvRoot.create(
        closure.manifest,
        closure.cache,
        closure.work / "roots",
        f"job-{request.param}",
        variant=request.param,
        home=user.home,
    )
    assert made.variant == request.param
    try:
        yield made
    finally:
        made.remove()


def spec(user: User, argv: list[str], **extra: str) -> TaskSpec:
    env = {"PATH": PATH, "HOME": user.home, **extra}
    return TaskSpec(argv, env, user.home, user.uid, user.gid, [user.gid], user.home)


async def collect(task: RunningTask) -> tuple[str, str, TaskExit]:
    out: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    async for stream, data in task.read_output():
        out[stream] += data
    done = await task.wait()
    return out["stdout"].decode(), out["stderr"].decode(), done


def run(root: EnvRoot, tmp: Path, task_spec: TaskSpec) -> tuple[str, str, TaskExit]:
    return asyncio.run(collect(start_task(task_spec, root, tmp)))


def test_runs_as_the_user_with_env_and_exit_status(
    root: EnvRoot, user: User, tmp_path: Path
) -> None:
    argv = ["sh", "-c", 'id -u; id -G; hostname; echo "$FOO"; touch "$HOME/was-here"; exit 3']
    out, err, done = run(root, tmp_path, spec(user, argv, FOO="bar baz"))
    assert out.splitlines() == [str(user.uid), str(user.gid), os.uname().nodename, "bar baz"], err
    assert (done.status, done.signal) == (3, None)
    assert set(done.rusage) == {"utime", "stime", "maxrss"} and done.rusage["maxrss"] > 0
    # The home is the host's, bound in: what the task writes stays, as the user.
    made = Path(user.home, "was-here")
    assert made.stat().st_uid == user.uid
    made.unlink()


def test_root_only_files_stay_hidden(root: EnvRoot, user: User, tmp_path: Path) -> None:
    secret = Path(f"/etc/beolaunch-secret-{secrets.token_hex(4)}")
    secret.write_text("root only\n")
    secret.chmod(0o600)
    job_tmp = tmp_path / "tmp"
    job_tmp.mkdir()
    (job_tmp / "secret").write_text("root only\n")
    (job_tmp / "secret").chmod(0o600)
    try:
        argv = ["sh", "-c", f"cat {secret}; [ -e /tmp/secret ] && echo bound; cat /tmp/secret"]
        out, err, done = run(root, job_tmp, spec(user, argv))
    finally:
        secret.unlink()
    assert out == "bound\n"  # the job's tmp is there, its root-only file unreadable
    assert "root only" not in out + err
    assert f"{secret}: No such file" in err and "/tmp/secret: Permission denied" in err
    assert done.status == 1


def test_runs_the_submitted_library_not_the_replaced_one(
    root: EnvRoot, user: User, closure: Closure, tmp_path: Path
) -> None:
    out, err, done = run(root, tmp_path, spec(user, [closure.program]))
    assert done.status == 0, err
    first, second = out.splitlines()
    assert first == f"v1 {closure.lib_path}"
    assert second == f"{closure.lib_sha}  {closure.lib_path}"


def test_a_file_submitted_from_tmp_is_shown_over_the_jobs_tmp(
    root: EnvRoot, user: User, closure: Closure, tmp_path: Path
) -> None:
    # The job's own /tmp is bound over the root's: the submitted file is bound back.
    assert closure.script.startswith("/tmp/"), "pytest's basetemp is expected under /tmp"
    job_tmp = tmp_path / "job-tmp"
    out, err, done = run(
        root, job_tmp, spec(user, ["sh", "-c", f"sh {closure.script}; touch /tmp/x"])
    )
    assert (out, done.status) == ("submitted\n", 0), err
    assert (job_tmp / "x").stat().st_uid == user.uid  # and the rest of /tmp is the job's


def test_a_missing_program_names_the_step(root: EnvRoot, user: User, tmp_path: Path) -> None:
    with pytest.raises(TaskProgramNotFoundError) as info:
        start_task(spec(user, ["ls", "/"]), root, tmp_path)  # ls is not in the manifest
    assert info.value.step == "find program" and "ls" in info.value.detail


def test_root_is_refused(root: EnvRoot, user: User, tmp_path: Path) -> None:
    with pytest.raises(RootTaskRefusedError):
        start_task(TaskSpec(["id"], {}, "/", 0, 0, [0], None), root, tmp_path)


async def _wait_for_sleeps(task: RunningTask, count: int) -> list[psutil.Process]:
    """The task's processes once ``count`` of them run ``sleep 300`` (a forked
    shell not yet exec'd still shows the shell's command). Process objects, taken
    while they run, so a pid reused later (pid_max is 32768 here) is not them."""
    while True:
        rows = task.procs()
        if sum(r["cmd"] == "sleep 300" for r in rows) >= count:
            found = []
            for row in rows:
                with contextlib.suppress(psutil.NoSuchProcess):
                    found.append(psutil.Process(int(row["pid"])))
            return found
        await asyncio.sleep(0.02)


def _survivors(procs: list[psutil.Process], within: float = 10.0) -> list[str]:
    """The processes among ``procs`` still alive (not a zombie) after ``within``
    seconds, as "pid status cmdline". A process killed a moment ago may still be
    tearing itself down (its files and namespaces released, not yet a zombie): it
    gets the bounded wait; a process kill_all missed keeps running its
    ``sleep 300`` and is reported. ``is_running`` compares creation times, so a
    pid taken over by a new process counts as gone."""
    deadline = time.monotonic() + within
    while True:
        alive = [p for p in procs if p.is_running() and not _zombie_or_gone(p)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return [f"{p.pid} {_describe(p)}" for p in alive]


def _zombie_or_gone(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.status()} {' '.join(proc.cmdline())}"
    except psutil.Error as e:
        return f"({e})"


def test_a_signal_reaches_the_task_and_its_children(
    root: EnvRoot, user: User, tmp_path: Path
) -> None:
    async def scenario() -> tuple[TaskExit, list[psutil.Process], list[dict[str, object]]]:
        task = start_task(spec(user, ["sh", "-c", "sleep 300 & sleep 300; wait"]), root, tmp_path)
        procs = await _wait_for_sleeps(task, 2)
        rows = task.procs()
        task.signal(signal.SIGTERM)
        _, _, done = await collect(task)
        task.kill_all()
        return done, procs, rows

    done, procs, rows = asyncio.run(scenario())
    assert (done.status, done.signal) == (143, signal.SIGTERM)
    assert {r["user"] for r in rows} == {user.name}
    assert sorted(str(r["cmd"]) for r in rows)[1:] == ["sleep 300", "sleep 300"]
    assert _survivors(procs) == []


def test_kill_all_leaves_no_process_even_one_that_left_the_session(
    root: EnvRoot, user: User, tmp_path: Path
) -> None:
    async def scenario() -> tuple[TaskExit, list[psutil.Process]]:
        argv = ["sh", "-c", "setsid sleep 300 & sleep 300"]
        task = start_task(spec(user, argv), root, tmp_path)
        procs = await _wait_for_sleeps(task, 2)
        # Nothing of the agent's or the helper's reaches the task: stdin is /dev/null.
        fds = {p.pid: sorted(os.listdir(f"/proc/{p.pid}/fd")) for p in procs}
        assert len({os.getsid(p.pid) for p in procs}) == 2  # one sleep left the session
        assert all(names == ["0", "1", "2"] for names in fds.values()), fds
        assert os.readlink(f"/proc/{task.pid}/fd/0") == "/dev/null"
        task.kill_all()
        done = await task.wait()
        task.close()
        return done, procs

    done, procs = asyncio.run(scenario())
    assert done.status == 128 + signal.SIGKILL
    assert _survivors(procs) == []


def test_remove_leaves_no_mount_and_no_directory(
    closure: Closure, user: User, tmp_path: Path
) -> None:
    made = EnvRoot.create(
        closure.manifest, closure.cache, closure.work / "roots", "job-remove", home=user.home
    )
    out, _, _ = run(made, tmp_path, spec(user, ["sh", "-c", "echo hi"]))
    assert out == "hi\n"
    assert mounts_under(made.path)  # the view itself
    made.remove()
    made.remove()
    assert not mounts_under(made.path) and not made.path.exists()
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert str(made.path) not in mountinfo


def test_limits_stdin_fds_and_a_missing_cwd(root: EnvRoot, user: User, tmp_path: Path) -> None:
    task_spec = spec(user, ["sh", "-c", "ulimit -n; ulimit -c; pwd; cat; exit 0"])
    task_spec = replace(task_spec, cwd="/no/such/dir", rlimits={"nofile": (64, 64), "core": (0, 0)})
    out, err, done = run(root, tmp_path, task_spec)
    nofile, core, cwd = out.splitlines()
    assert (nofile, core) == ("64", "0")
    assert cwd == user.home and "cwd /no/such/dir is missing" in err
    # stdin is /dev/null: cat ended at once.
    assert done.status == 0


def test_a_failed_mount_names_the_step(closure: Closure, user: User, tmp_path: Path) -> None:
    # A farm built without the /proc mount point: the helper's bind of /proc fails.
    tree = Tree.from_manifest(closure.manifest, closure.cache.object_path)
    target = closure.work / "roots" / "no-mountpoints"
    build_farm(tree, target)
    bare = EnvRoot(target, "no-mountpoints", "farm", closure.manifest, ())
    try:
        with pytest.raises(TaskSetupError) as info:
            start_task(spec(user, ["sh", "-c", "exit 0"]), bare, tmp_path)
        assert info.value.step == "mount /proc"
        assert "No such file or directory" in info.value.detail
    finally:
        bare.remove()
    assert not target.exists()


def test_the_default_variant_and_a_home_missing_on_the_node(
    closure: Closure, user: User, tmp_path: Path
) -> None:
    made = EnvRoot.create(closure.manifest, closure.cache, closure.work / "roots", "job-default")
    try:
        assert made.variant == VARIANTS[0]
        missing = "/home/nobody-here"
        task_spec = replace(spec(user, ["sh", "-c", "pwd"]), home=missing, cwd=missing)
        out, err, done = run(made, tmp_path, task_spec)
    finally:
        made.remove()
    # The agent says a missing home once per job (sitebinds.py), never in a task's output.
    assert err == "beolaunch: cwd /home/nobody-here is missing in the root; running in /\n"
    assert out == "/\n" and done.status == 0  # neither cwd nor home: the root's /


def test_output_is_complete_and_in_order_per_stream(
    root: EnvRoot, user: User, tmp_path: Path
) -> None:
    # Several pipe-fulls on both streams: nothing lost or reordered by the read-ahead.
    argv = [
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done",
    ]
    out, err, done = run(root, tmp_path, spec(user, argv))
    assert done.status == 0
    assert out.splitlines() == [f"out{i}" for i in range(20000)]
    assert err.splitlines() == [f"err{i}" for i in range(20000)]


def test_a_symlink_planted_in_the_jobs_tmp_is_not_followed(
    root: EnvRoot, user: User, closure: Closure, tmp_path: Path
) -> None:
    # An earlier task of the job left /tmp/<first part of the script's dir> -> a host
    # dir: making the submitted file's mount point there must not write through it.
    job_tmp, host_dir = tmp_path / "job-tmp", tmp_path / "host-dir"
    job_tmp.mkdir()
    host_dir.mkdir()
    first = Path(closure.script).relative_to("/tmp").parts[0]
    (job_tmp / first).symlink_to(host_dir)
    out, err, _ = run(root, job_tmp, spec(user, ["sh", "-c", f"sh {closure.script}"]))
    assert list(host_dir.iterdir()) == []
    assert f"beolaunch: {closure.script} is no longer a file" in err
    assert out == ""


@contextlib.contextmanager
def _site_dir(user: User) -> Iterator[Path]:
    """A site's shared directory (0755, root's) holding a data file of the user's:
    under /var/tmp, since every task has its own /tmp."""
    site = Path(tempfile.mkdtemp(prefix="beolaunch-bindtest-", dir="/var/tmp"))
    try:
        site.chmod(0o755)
        (site / "data").write_text("site data\n")
        (site / "mine").mkdir()
        for path in (site / "data", site / "mine"):
            os.chown(path, user.uid, user.gid)
        yield site
    finally:
        for point in mounts_under(site):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(site)


def _mount_flags(mountinfo: str, point: str) -> set[str]:
    for line in mountinfo.splitlines():
        fields = line.split()
        if fields[4] == point:
            return set(fields[5].split(","))
    raise AssertionError(f"{point} is not mounted in the task: {mountinfo}")


def test_site_binds_show_the_hosts_dirs_and_the_submitted_files_over_them(
    closure: Closure, user: User, tmp_path: Path
) -> None:
    with _site_dir(user) as site:
        # Something the host mounted inside the bind, without nosuid: the task gets
        # it too (recursive bind), hardened like the rest.
        (site / "sub").mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", site / "sub"], check=True
        )
        (site / "sub" / "inner").write_text("from a submount\n")
        # /home is a site bind: the user's home needs no bind of its own; the
        # program submitted from it still runs with the submitted library (v1).
        plan = plan_binds(closure.manifest, ["/home", str(site)], user.home)
        assert plan.binds == ("/home", str(site)) and plan.home is None and not plan.notices
        made = EnvRoot.create(
            closure.manifest, closure.cache, closure.work / "roots", "job-binds",
            home=plan.home, binds=plan.binds,
        )  # fmt: skip
        try:
            script = (
                f"pwd; cat data sub/inner; echo written > mine/out; {closure.program}; "
                "cat /proc/self/mountinfo"
            )
            task_spec = replace(spec(user, ["sh", "-c", script]), cwd=str(site))
            out, err, done = run(made, tmp_path, task_spec)
        finally:
            made.remove()
        assert (done.status, err) == (0, "")
        lines = out.splitlines()
        assert lines[:3] == [str(site), "site data", "from a submount"]
        assert lines[3] == f"v1 {closure.lib_path}"  # the submitted copy, over the bind
        assert lines[4] == f"{closure.lib_sha}  {closure.lib_path}"
        written = site / "mine" / "out"
        assert written.read_text() == "written\n" and written.stat().st_uid == user.uid
        mountinfo = "\n".join(lines[5:])
        for point in ("/home", str(site), f"{site}/sub"):
            assert {"nosuid", "nodev"} <= _mount_flags(mountinfo, point), point


def test_a_bind_source_behind_a_users_symlink_is_not_followed(
    closure: Closure, user: User, tmp_path: Path
) -> None:
    with _site_dir(user) as site:
        secret = site / "elsewhere"
        secret.mkdir(mode=0o755)
        (secret / "file").write_text("not for the bind\n")
        link = site / "mine" / "link"
        link.symlink_to(secret)
        os.lchown(link, user.uid, user.gid)  # planted by the user in their own dir
        said = plan_binds(closure.manifest, [str(link)], None).notices
        assert said == (
            f"{link} has a symbolic link not owned by root on its path (link): not followed; "
            "the job runs without it",
        )
        # Even with a mount point for it (an agent that did not check), the helper
        # does not follow the link as root: the mount point stays empty.
        made = EnvRoot.create(
            closure.manifest, closure.cache, closure.work / "roots", "job-link", binds=[str(link)]
        )
        try:
            out, err, done = run(made, tmp_path, spec(user, ["sh", "-c", f"echo {link}/*"]))
        finally:
            made.remove()
    assert (out, err, done.status) == (f"{link}/*\n", "", 0)
