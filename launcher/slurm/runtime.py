"""The node runtime's hash, advertised as a Slurm node feature.

Until stage-3 images exist (issue 7) a node's runtime is what its agent runs
from: the Python interpreter with the libraries and standard modules it loads
(its closure, :func:`cachefs.closure.resolve`), Beolaunch's own packages
(``launcher``, ``cachefs``, ``bootsvc``: their ``.py`` files) and the
``RECORD`` file of every installed distribution in site-packages (each lists
the sha256 of every file that distribution installed, so hashing the RECORDs
covers the dependencies without reading them). The runtime hash is the id of
that manifest (sha256 of its canonical JSON), made with no owner.

Hashing reads about 10 MB; a cache file keyed by the (path, size, mtime,
inode) of every input makes a repeated call cost a ``stat`` per file.

The feature is ``beolaunch-rt-`` and the first 12 hex digits, so a job
``sbatch --constraint=beolaunch-rt-0123456789ab`` (``beosub -C ...``) runs only
on nodes whose runtime is that one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cachefs.atomicfile import write_atomic
from launcher.errors import RuntimeHashError

FEATURE_PREFIX = "beolaunch-rt-"
FEATURE_HEX = 12
_PACKAGES = ("launcher", "cachefs", "bootsvc")


@dataclass(frozen=True)
class RuntimeHash:
    """The runtime's manifest id and how many files went into it."""

    sha256: str
    files: int

    @property
    def feature(self) -> str:
        """The Slurm node feature naming this runtime."""
        return feature(self.sha256)


def feature(sha256: str) -> str:
    """``beolaunch-rt-<first 12 hex>`` for a runtime hash."""
    return FEATURE_PREFIX + sha256[:FEATURE_HEX]


def _package_files(source_root: Path) -> list[str]:
    out: list[str] = []
    for name in _PACKAGES:
        top = source_root / name
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            out += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return out


def _records(site_packages: Iterable[Path]) -> list[str]:
    out: list[str] = []
    for site in site_packages:
        try:
            names = sorted(os.listdir(site))
        except FileNotFoundError:
            continue
        out += [
            str(site / n / "RECORD")
            for n in names
            if n.endswith(".dist-info") and (site / n / "RECORD").is_file()
        ]
    return out


def runtime_paths(python: str, source_root: Path, site_packages: Iterable[Path]) -> list[str]:
    """Every path the runtime hash covers, sorted. Raises RuntimeHashError when
    the interpreter's closure cannot be resolved."""
    from cachefs.closure import resolve
    from cachefs.errors import CachefsError

    try:
        closure = resolve(python, env={"PATH": "/usr/bin:/bin"})
    except CachefsError as exc:
        raise RuntimeHashError(python, f"cannot resolve the interpreter's files: {exc}") from exc
    paths = set(closure.paths)
    paths.update(_package_files(source_root))
    paths.update(_records(site_packages))
    return sorted(paths)


def _stat_key(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            digest.update(f"{path}\0-\n".encode())
            continue
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
    return digest.hexdigest()


def compute(
    python: str, source_root: Path, site_packages: Iterable[Path], cache: Path | None = None
) -> RuntimeHash:
    """The runtime hash of ``python`` running Beolaunch from ``source_root``.

    With ``cache``, an earlier answer is reused while no input file changed
    (size, mtime, inode); the cache file is rewritten otherwise (a cache that
    cannot be read or written is ignored: it only saves time). Raises
    RuntimeHashError when a file cannot be read.
    """
    from cachefs.errors import CachefsError
    from cachefs.snapshot import snapshot

    paths = runtime_paths(python, source_root, site_packages)
    key = _stat_key(paths)
    if cache is not None:
        try:
            known = json.loads(cache.read_text("utf-8"))
            if known.get("key") == key:
                return RuntimeHash(str(known["sha256"]), int(known["files"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    try:
        manifest = snapshot(python, paths, None)
    except CachefsError as exc:
        raise RuntimeHashError(python, f"cannot hash the runtime's files: {exc}") from exc
    found = RuntimeHash(manifest.id, sum(1 for e in manifest if e.kind == "file"))
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            doc = {"key": key, "sha256": found.sha256, "files": found.files}
            write_atomic(cache, json.dumps(doc))
        except OSError:
            pass
    return found


def this_runtime(cache: Path | None = None) -> RuntimeHash:
    """The runtime hash of the interpreter and Beolaunch running this code."""
    source_root = Path(__file__).resolve().parents[2]
    sites = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    return compute(sys.executable, source_root, sorted(sites), cache)
