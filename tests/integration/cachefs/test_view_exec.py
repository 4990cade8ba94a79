"""Real programs run from a chroot onto each environment root variant.

The root holds only the manifest's paths (the loader is the oracle for what
they are), so the host's copies are hidden: a program that ran found what it
needed in the view. Programs run as nobody, as jobs do (``allow_other``).
Needs root (chroot, mount), /dev/fuse, gcc.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cachefs.errors import FarmError, ViewMountError
from cachefs.manifest import Manifest
from cachefs.view.farm import COPY_EXDEV, build_farm, remove_farm
from cachefs.view.fuse import is_mounted, mount, override
from cachefs.view.tree import FileNode, Tree
from tests.integration.cachefs.view_roots import RootBuilder, loader_paths

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or shutil.which("gcc") is None,
    reason="needs root (chroot, mount), /dev/fuse and gcc",
)

NOBODY = "65534:65534"
UNSHARE = shutil.which("unshare") or "unshare"
IN_ROOT = f'mount -t proc proc "$0/proc" && exec chroot --userspec={NOBODY} "$0" "$@"'
GREET_LIB = 'const char *greet(void) { return "hello from libgreet via $ORIGIN"; }\n'
GREET_MAIN = (
    "#include <stdio.h>\nconst char *greet(void);\nint main(void) { puts(greet()); return 0; }\n"
)
PY_SCRIPT = "import json, sys; print(json.dumps({'prefix': sys.prefix, 'n': [1, 2]}))"


def build_greet(src: Path) -> Path:
    """A program that finds libgreet.so only through DT_RPATH $ORIGIN/../lib."""
    (src / "lib").mkdir(parents=True)
    (src / "bin").mkdir()
    (src / "greet.c").write_text(GREET_LIB)
    (src / "main.c").write_text(GREET_MAIN)
    lib, prog = src / "lib" / "libgreet.so", src / "bin" / "greet"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, src / "greet.c"], check=True)
    subprocess.run(
        [
            *("gcc", "-o", str(prog), str(src / "main.c"), f"-L{src / 'lib'}", "-lgreet"),
            *("-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../lib"),
        ],
        check=True,
    )
    return prog


@pytest.fixture(scope="module")
def closure(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, RootBuilder]:
    work = tmp_path_factory.mktemp("view")
    prog = build_greet(work / "greet")
    builder = RootBuilder(work / "store")
    builder.add_program("/bin/sh")
    builder.add_python()
    for path in map(os.path.normpath, loader_paths(prog)):  # ld.so says bin/../lib
        if path.startswith(str(work)):
            builder.add_file_as(Path(path), f"/opt/greet/{Path(path).relative_to(work / 'greet')}")
        else:
            builder.add(path)
    builder.add_file_as(prog, "/opt/greet/bin/greet")
    return builder.manifest("/opt/greet/bin/greet"), builder


@pytest.fixture(scope="module")
def tree(closure: tuple[Manifest, RootBuilder]) -> Tree:
    manifest, builder = closure
    return Tree.from_manifest(
        manifest, builder.object_path, mtimes=builder.mtimes, mountpoints=["/proc"]
    )


@pytest.fixture(scope="module", params=["fuse", "farm"])
def root(
    request: pytest.FixtureRequest, tree: Tree, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    # Next to the store: a farm hardlinks, so it must be on the same filesystem.
    where = tmp_path_factory.mktemp(f"root-{request.param}")
    if request.param == "fuse":
        with mount(tree, where):
            yield where
        assert not is_mounted(where)
    else:
        report = build_farm(tree, where)
        assert report.read_only and report.hardlinked > 0
        try:
            yield where
        finally:
            remove_farm(where)
        assert not where.exists()


def in_root(root: Path, *argv: str) -> str:
    """Run ``argv`` as nobody chrooted at ``root``, with /proc mounted there (glibc
    reads /proc/self/exe for $ORIGIN) in a private mount namespace."""
    done = subprocess.run(
        [
            *(UNSHARE, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", IN_ROOT),
            *(str(root), *argv),
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_host_files_are_hidden(root: Path) -> None:
    out = in_root(
        root,
        "/bin/sh",
        "-c",
        "for f in /etc/hostname /usr/bin/ls; do [ -e $f ] && echo $f; done; echo done",
    )
    assert out == "done\n"


def test_sh_runs(root: Path) -> None:
    assert in_root(root, "/bin/sh", "-c", "echo $((6 * 7)) $0") == "42 /bin/sh\n"


def test_python_imports_json_from_the_view(root: Path) -> None:
    assert in_root(root, "/usr/bin/python3", "-c", PY_SCRIPT) == '{"prefix": "/usr", "n": [1, 2]}\n'


def test_c_program_finds_its_library_through_origin(root: Path) -> None:
    # libgreet.so exists nowhere but /opt/greet/lib: only the RPATH finds it.
    assert not (root / "usr/lib/libgreet.so").exists()
    assert in_root(root, "/opt/greet/bin/greet") == "hello from libgreet via $ORIGIN\n"


def test_symlinks_read_back_with_their_targets(root: Path) -> None:
    assert os.readlink(root / "lib") == "usr/lib"
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "lib64") == "usr/lib64"


def test_writes_are_refused_with_erofs(root: Path) -> None:
    attempts: tuple[Callable[[], object], ...] = (
        lambda: os.open(root / "usr/bin/python3.11", os.O_WRONLY),
        lambda: os.mkdir(root / "usr/new"),
        lambda: os.unlink(root / "opt/greet/lib/libgreet.so"),
    )
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS


# --- FUSE only ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mounted(tree: Tree, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("mounted")
    with mount(tree, where):
        yield where


def test_fuse_errno(mounted: Path) -> None:
    cases: list[tuple[Callable[[], object], int]] = [
        (lambda: os.open(mounted / "etc/hostname", os.O_RDONLY), errno.ENOENT),
        (lambda: os.stat(mounted / "opt/greet/bin/greet/x"), errno.ENOTDIR),
        (lambda: os.open(mounted / "opt/greet/bin/greet", os.O_RDWR), errno.EROFS),
        (lambda: os.open(mounted / "opt/new", os.O_WRONLY | os.O_CREAT), errno.EROFS),
        (lambda: os.chmod(mounted / "opt/greet/bin/greet", 0o777), errno.EROFS),
        (lambda: os.readlink(mounted / "opt/greet/bin/greet"), errno.EINVAL),
        # No xattrs: left to libfuse, so the kernel stops asking on every exec.
        (lambda: os.getxattr(mounted / "opt/greet/bin/greet", "user.x"), errno.EOPNOTSUPP),
    ]
    for call, expected in cases:
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == expected, (call, info.value)


def test_fuse_readdir_lists_synthesized_parents(mounted: Path, tree: Tree) -> None:
    assert sorted(os.listdir(mounted)) == ["bin", "etc", "lib", "lib64", "opt", "proc", "usr"]
    assert os.listdir(mounted / "etc") == ["python3.11"]  # the target of sitecustomize.py
    assert os.listdir(mounted / "opt") == ["greet"]
    assert sorted(os.listdir(mounted / "opt/greet")) == ["bin", "lib"]
    assert tree.directory("/opt").synthesized
    vfs = os.statvfs(mounted)
    assert (vfs.f_files, vfs.f_bfree) == (len(tree), 0)
    assert vfs.f_blocks * vfs.f_frsize >= tree.total_size()


def test_fuse_files_are_roots_with_manifest_modes_and_bytes(
    mounted: Path, closure: tuple[Manifest, RootBuilder]
) -> None:
    manifest, _ = closure
    entry = manifest.get("/usr/lib/python3.11/json/__init__.py")
    assert entry is not None
    st = os.stat(mounted / entry.path.lstrip("/"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_size) == (0, 0, entry.mode, entry.size)
    assert st.st_mtime_ns == os.stat(entry.path).st_mtime_ns  # given as Tree(mtimes=...)
    host = Path(entry.path).read_bytes()
    assert (mounted / entry.path.lstrip("/")).read_bytes() == host


def test_fuse_mount_options(mounted: Path) -> None:
    line = next(
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if f" {mounted} " in line
    )
    options = set(line.split(" ")[5].split(",")) | set(line.split(" - ")[1].split()[2].split(","))
    assert {"ro", "nosuid", "nodev", "allow_other", "default_permissions"} <= options


def test_unmount_reaps_the_server_and_is_idempotent(tree: Tree, tmp_path: Path) -> None:
    handle = mount(tree, tmp_path)
    assert os.listdir(tmp_path)  # the view, not the empty directory
    handle.unmount()
    handle.unmount()
    assert not is_mounted(tmp_path) and os.listdir(tmp_path) == []
    assert handle.process.returncode == 0


def test_a_misspelt_callback_fails_at_definition() -> None:
    def getatr(path: str) -> None: ...

    with pytest.raises(TypeError, match="getatr"):
        override(getatr)


def test_mount_on_a_missing_directory_fails_cleanly(tree: Tree, tmp_path: Path) -> None:
    with pytest.raises(ViewMountError) as info:
        mount(tree, tmp_path / "absent")
    assert info.value.mountpoint == str(tmp_path / "absent")


def test_mount_twice_is_refused(tree: Tree, mounted: Path) -> None:
    with pytest.raises(ViewMountError):
        mount(tree, mounted)


# --- farm only ------------------------------------------------------------------------


def test_farm_hardlinks_objects_and_copies_executables(
    tree: Tree, closure: tuple[Manifest, RootBuilder], tmp_path: Path
) -> None:
    _, builder = closure
    # Next to the store (tmp_path is on its filesystem): no EXDEV.
    report = build_farm(tree, tmp_path / "farm", read_only=False)
    try:
        entry = tree.lookup("/usr/lib/python3.11/json/decoder.py")
        assert isinstance(entry, FileNode)
        farm_file = tmp_path / "farm/usr/lib/python3.11/json/decoder.py"
        assert farm_file.stat().st_ino == builder.object_path(entry.sha256).stat().st_ino
        prog = (tmp_path / "farm/opt/greet/bin/greet").stat()
        assert prog.st_mode & 0o111 and not prog.st_mode & 0o222
        assert "/opt/greet/bin/greet" in {c.path for c in report.copied}
    finally:
        remove_farm(tmp_path / "farm")
    # Removing the farm drops links, never objects.
    assert builder.object_path(entry.sha256).exists()


def test_farm_on_another_filesystem_copies_and_says_so(
    tree: Tree, closure: tuple[Manifest, RootBuilder]
) -> None:
    shm = Path("/dev/shm")
    if os.stat(shm).st_dev == os.stat(closure[1].store).st_dev:
        pytest.skip("/dev/shm is on the store's filesystem")
    target = shm / f"beolaunch-farm-{os.getpid()}"
    report = build_farm(tree, target, read_only=False)
    try:
        assert report.hardlinked == 0
        assert COPY_EXDEV in {c.reason for c in report.copied}
        assert in_root(target, "/opt/greet/bin/greet") == "hello from libgreet via $ORIGIN\n"
    finally:
        remove_farm(target)


def test_farm_refuses_a_non_empty_target(tree: Tree, tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("mine")
    with pytest.raises(FarmError):
        build_farm(tree, tmp_path)
    assert (tmp_path / "keep").read_text() == "mine"
