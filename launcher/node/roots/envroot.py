"""A job's environment root on a node: the manifest's files, from the verified cache.

Two variants of :mod:`cachefs.view`: a read-only FUSE mount (the default) or a
hardlink farm bind-mounted read-only (hosts without ``/dev/fuse``). Either way
the root shows only the manifest's paths plus empty mount points for ``/proc``,
``/dev``, ``/tmp``, the site's binds and the user's home, which each task binds
in its own mount namespace (:mod:`launcher.node.tasks.enter_task`), so the host sees
one mount per root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cachefs.cache import NodeCache
from cachefs.errors import CachefsError
from cachefs.manifest import Manifest
from cachefs.view.farm import build_farm, remove_farm
from cachefs.view.fuse import MountHandle, mount
from cachefs.view.tree import Tree
from launcher.errors import EnvRootError
from launcher.node.roots.late import LateBridge
from launcher.node.roots.sitebinds import SYSTEM_MOUNTPOINTS, mount_order

Variant = Literal["fuse", "farm"]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def mounts_under(path: Path) -> list[str]:
    """Mount points at or under ``path`` in this mount namespace, deepest first."""
    top = str(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for line in info:
            point = _unescape(line.split(" ", 5)[4])
            if point == top or point.startswith(top.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _umount(point: str) -> None:
    """Unmount ``point``; a busy one is detached lazily (gone with its last user)."""
    for argv in (["umount", point], ["umount", "-l", point]):
        if subprocess.run(argv, capture_output=True, check=False).returncode == 0:
            return


def _check_job(job: str) -> str:
    if not job or job in (".", "..") or "/" in job or "\0" in job:
        raise EnvRootError(job, Path(job), "a job name must be one path component")
    return job


@dataclass
class EnvRoot:
    """A built root at ``path``; :meth:`remove` it when the job is done."""

    path: Path
    job: str
    variant: Variant
    manifest: Manifest
    #: Directories shown empty for the sandbox to mount on.
    mountpoints: tuple[str, ...]
    #: the link of a root that may fetch late files (FUSE only)
    late: LateBridge | None = field(default=None, repr=False)
    _handle: MountHandle | None = field(default=None, repr=False)
    _removed: bool = field(default=False, repr=False)

    @classmethod
    def create(
        cls,
        manifest: Manifest,
        cache: NodeCache,
        roots_dir: Path,
        job: str,
        *,
        variant: Variant | None = None,
        home: str | None = None,
        binds: Sequence[str] = (),
        late: LateBridge | None = None,
    ) -> EnvRoot:
        """Build ``manifest``'s root at ``roots_dir/job`` from ``cache`` (every
        object must be cached: fill and pin first).

        ``variant`` None picks FUSE when ``/dev/fuse`` exists and mounting works,
        else the farm (keep ``roots_dir`` on the cache's filesystem so the farm
        hardlinks instead of copying). ``home`` and ``binds`` (the site binds
        this node has: :mod:`launcher.node.roots.sitebinds`) get mount points.
        ``late``: the FUSE root asks through it for what the manifest lacks
        (:mod:`launcher.node.roots.late`); a farm cannot, and closes it.
        Raises EnvRootError for a bad job name, an existing root, an object
        missing from the cache, a manifest the view refuses, or a failed mount.
        """
        path = Path(os.path.realpath(roots_dir)) / _check_job(job)
        extra = mount_order([*binds, *([home] if home else [])])
        points = tuple(dict.fromkeys([*SYSTEM_MOUNTPOINTS, *extra]))
        try:
            tree = Tree.from_manifest(manifest, cache.object_path, mountpoints=points)
        except CachefsError as exc:
            raise EnvRootError(job, path, f"cannot present the manifest: {exc}") from exc
        try:
            path.mkdir(parents=True)
        except FileExistsError as exc:
            raise EnvRootError(
                job, path, "it already exists; remove the old root (EnvRoot.remove_path) first"
            ) from exc
        root = cls(path, job, variant or "fuse", manifest, points, late)
        try:
            if variant in (None, "fuse"):
                try:
                    if not os.path.exists("/dev/fuse"):
                        raise EnvRootError(job, path, "no /dev/fuse on this node")
                    link = late.link(points) if late is not None else None
                    root._handle = mount(tree, path, late=link)
                    if late is not None:
                        late.mounted()
                    return root
                except (CachefsError, EnvRootError) as exc:
                    if variant == "fuse":
                        raise EnvRootError(job, path, f"FUSE view: {exc}") from exc
            root.variant = "farm"
            root.late = None
            if late is not None:
                late.close()
            build_farm(tree, path)
            return root
        except EnvRootError:
            if late is not None:
                late.close()
            cls.remove_path(path)
            raise
        except (CachefsError, OSError) as exc:
            if late is not None:
                late.close()
            cls.remove_path(path)
            raise EnvRootError(job, path, f"farm: {exc}") from exc

    @property
    def binds(self) -> tuple[str, ...]:
        """The mount points besides /proc, /dev and /tmp (site binds, home), in mount order."""
        return tuple(p for p in self.mountpoints if p not in SYSTEM_MOUNTPOINTS)

    def overlays(self, under: str) -> list[str]:
        """The manifest's files below directory ``under`` (a bind there hides them)."""
        prefix = under.rstrip("/") + "/"
        return [e.path for e in self.manifest if e.kind == "file" and e.path.startswith(prefix)]

    def remove(self) -> None:
        """Unmount everything at or under the root (lazily if busy), stop the FUSE
        server and delete the root. A second call does nothing. Raises
        EnvRootError when the directory cannot be deleted.

        Kill the job's tasks first (RunningTask.kill_all): a task's namespace
        holds a copy of the view, so the FUSE server outlives the host's
        unmount until the task is gone, and is killed after the view's
        unmount timeout."""
        if self._removed:
            return
        self._removed = True
        if self._handle is not None:
            # On error it was detached lazily and the server reaped or killed.
            with contextlib.suppress(CachefsError):
                self._handle.unmount()
        if self.late is not None:
            self.late.close()
        self.remove_path(self.path, job=self.job)

    @staticmethod
    def remove_path(path: Path, *, job: str = "?") -> None:
        """Remove a root by path alone (a root left by a crashed agent included)."""
        path = Path(os.path.realpath(path))
        for point in mounts_under(path):
            _umount(point)
        left = mounts_under(path)
        if left:
            # Never descend into a mount: it could be the host's /dev or a home.
            raise EnvRootError(job, path, f"still mounted after a lazy unmount: {left}")
        if not path.exists():
            return
        with contextlib.suppress(CachefsError, OSError):
            remove_farm(path)
        if path.exists():
            # A farm keeps directories mode 0555; root removes them anyway.
            try:
                shutil.rmtree(path)
            except OSError as exc:
                raise EnvRootError(job, path, f"cannot delete it: {exc}") from exc
