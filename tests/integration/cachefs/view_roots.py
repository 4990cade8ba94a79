"""Build manifests and a store of objects for real programs, for view tests.

The loader itself is the oracle for what a program needs (``ld.so --list``),
so these tests do not depend on the closure resolver. Paths are added the way
the resolver keeps them: every symlink met on the way (Debian's /lib ->
usr/lib, /bin -> usr/bin) becomes a symlink entry and the walk continues at
its target, so the real file lands at its real path. Objects are copied into
``objects/xx/<sha256>`` (mode 0444) like the node cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

from cachefs.manifest import Entry, Manifest, build

LOADER = "/lib64/ld-linux-x86-64.so.2"
PYTHON_STDLIB = "/usr/lib/python3.11"
#: Not needed to run the interpreter: third-party packages and the test suite.
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_LIST_LINE = re.compile(r"^\s*(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$")


def loader_paths(program: str | Path) -> list[str]:
    """The files the real loader maps for ``program`` (itself not included)."""
    out = subprocess.run(
        [LOADER, "--list", str(program)], capture_output=True, text=True, check=True
    ).stdout
    if "not found" in out:
        raise AssertionError(f"the loader cannot resolve {program}:\n{out}")
    return [m.group(1) for line in out.splitlines() if (m := _LIST_LINE.match(line))]


class RootBuilder:
    """Collect entries and objects; ``store`` is where ``objects/`` goes."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.entries: dict[str, Entry] = {}
        #: The host's mtime of each path, for Tree(mtimes=...): manifests hold none.
        self.mtimes: dict[str, int] = {}

    def object_path(self, sha256: str) -> Path:
        return self.store / "objects" / sha256[:2] / sha256

    def _ingest(self, host_file: Path) -> tuple[str, int]:
        digest = hashlib.sha256()
        with open(host_file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        sha = digest.hexdigest()
        dest = self.object_path(sha)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".tmp")
            shutil.copyfile(host_file, tmp)
            tmp.chmod(0o444)
            tmp.rename(dest)
        return sha, dest.stat().st_size

    def add_file_as(self, host_file: Path, env_path: str) -> None:
        """Put ``host_file`` (followed if a symlink) at ``env_path``."""
        sha, size = self._ingest(host_file)
        st = host_file.stat()
        self.entries[env_path] = Entry(env_path, "file", stat.S_IMODE(st.st_mode), size, sha)
        self.mtimes[env_path] = st.st_mtime_ns

    def add(self, path: str, _depth: int = 0) -> None:
        """Add host ``path``: each symlink on the way as a symlink, then the target."""
        assert _depth < 40, f"symlink loop at {path}"
        parts = path.strip("/").split("/")
        current = "/"
        for i, name in enumerate(parts):
            step = os.path.join(current, name)
            st = os.lstat(step)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(step)
                self.entries[step] = Entry(step, "symlink", 0o777, target=target)
                self.mtimes[step] = st.st_mtime_ns
                # ``current`` holds no symlink, so normpath of target..rest is exact.
                resolved = os.path.normpath(os.path.join(current, target, *parts[i + 1 :]))
                self.add(resolved, _depth + 1)
                return
            if not stat.S_ISDIR(st.st_mode):
                assert i == len(parts) - 1, f"{step} is not a directory"
                self.add_file_as(Path(step), step)
                return
            current = step
        st = os.lstat(current)
        self.entries[current] = Entry(current, "dir", stat.S_IMODE(st.st_mode))
        self.mtimes[current] = st.st_mtime_ns

    def add_program(self, program: str) -> None:
        """The program and every library the loader maps for it."""
        for path in [program, *loader_paths(program)]:
            self.add(path)

    def add_python(self, *, pycache: bool = False) -> None:
        """python3 and its standard library (without tests, site-packages, and
        without the ``__pycache__`` directories unless ``pycache``)."""
        self.add_program("/usr/bin/python3")
        skip = STDLIB_SKIP - {"__pycache__"} if pycache else STDLIB_SKIP
        for dirpath, dirnames, filenames in os.walk(PYTHON_STDLIB):
            dirnames[:] = [d for d in dirnames if d not in skip]
            for name in filenames + [d for d in dirnames if os.path.islink(f"{dirpath}/{d}")]:
                self.add(os.path.join(dirpath, name))

    def manifest(self, root: str) -> Manifest:
        return build(root, self.entries.values())
