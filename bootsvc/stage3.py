"""The stage-3 image: the node's root filesystem, from the master's own Python install.

Stage 2 unpacks it into a tmpfs and ``switch_root``s into its ``/init``
(``bootsvc/stage3_init.sh``), which starts ``python -m launcher.node.boot``:
enroll with the boot ticket, then run the node agent. So the image holds
exactly what that needs, taken from the machine that builds it:

- the interpreter the master runs on (the venv's ``python`` resolved to
  ``/usr/bin/python3.11``) and its standard library without what a node agent
  never uses (:data:`PRUNED_STDLIB`, test extension modules, ``__pycache__``);
- the third-party top-level packages the agent imports (found by importing
  :data:`AGENT_MODULES` in a subprocess of that interpreter and reading
  ``sys.modules``), whole, so lazy imports work, with each distribution's
  ``METADATA`` so ``importlib.metadata`` answers; the project's own
  ``launcher`` and ``cachefs`` the same way; all in the directory the
  interpreter searches by default (Debian: ``/usr/lib/python3/dist-packages``);
- every shared library those ELF files load, resolved as ld.so would by
  :mod:`cachefs.closure`, plus ``libfuse.so.2`` (fusepy dlopens it; ``/init``
  names it in ``FUSE_LIBRARY_PATH``) and ``fusermount``;
- static busybox with its applet links, a minimal ``/etc``, empty mount points,
  ``/dev/console``, and ``fuse.ko`` and the NFSv4 client (:data:`KERNEL_MODULES`,
  with what ``modules.dep`` says they need) under ``/usr/lib/modules/RELEASE``,
  listed in load order in ``beolaunch.load-order``.

Paths follow the merged-``/usr`` layout (``/bin``, ``/sbin``, ``/lib``,
``/lib64`` are symlinks into ``/usr``) whatever the build host's layout.

Reproducible as stage 2 is (:mod:`bootsvc.newc`: sorted, root-owned, one
mtime; gzip mtime 0): the same install, kernel tree, busybox and init script
give the same sha256. The host's ``.pyc`` files are left out (they are stamped
with source mtimes the archive does not keep); every module is compiled anew
by the target interpreter into checked-hash ``.pyc`` files, in one process in
sorted order, so a node imports without compiling (under QEMU's TCG that is
most of the time from /init to a running agent).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bootsvc import initscript, newc
from bootsvc.errors import Stage3BuildError
from bootsvc.modalias import ModuleIndex, module_name
from bootsvc.stage2 import busybox_applets
from cachefs.closure import Resolver
from cachefs.errors import ClosureError

#: What the node runs: imported by the probe to find the third-party packages.
AGENT_MODULES = (
    "launcher.node.boot",
    "launcher.node.agent",
    "launcher.node.hardware",
    "launcher.node.tasks.enter_task",
    "launcher.node.tasks.enter_step",
    "launcher.node.tasks.sandbox",
    "launcher.node.roots.envroot",
    "launcher.cli.beonode",
    "cachefs.view.fuse",
)

#: Top-level names of the standard library a node agent never imports.
PRUNED_STDLIB = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "turtle.py",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "venv",
        "distutils",
        "sqlite3",
        "curses",
        "site-packages",
        "dist-packages",
        "__pycache__",
    }
)
#: Extension modules (name prefixes) of the standard library's test suite, and those
#: whose libraries a node agent never needs (Berkeley DB, SQLite, NIS/Kerberos, curses).
PRUNED_DYNLOAD = (
    "_test",
    "_ctypes_test",
    "_xxtestfuzz",
    "xxlimited",
    "_dbm.",
    "_sqlite3.",
    "nis.",
    "_curses",
    "ossaudiodev.",
    "audioop.",
)
#: Build inputs that third-party packages ship beside their extension modules.
SOURCE_SUFFIXES = (".c", ".h", ".pyx", ".pxd", ".cpp")
#: Kernel modules stage 3 loads itself (the NIC ones came with stage 2), each with what
#: ``modules.dep`` says it needs, in load order: FUSE for job roots, and the NFSv4
#: client for site mounts (``nfsv4`` pulls in nfs, sunrpc, lockd, grace, fscache,
#: netfs, dns_resolver: 1.1 MB more gzip image, 21.7 -> 22.8 MB). Left out: nfsv3 (the
#: default mount is NFSv4; add "nfsv3" for a v3 filer), auth_rpcgss and
#: rpcsec_gss_krb5 (Kerberos needs rpc.gssd, which the image does not carry:
#: sec=sys only), pNFS layout drivers (the client reads files through the server
#: without them). docs/boot.md says how to add another filesystem's client.
KERNEL_MODULES = ("fuse", "nfsv4")
#: Loader search directories where libfuse.so.2 is looked for by default.
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")
MERGED = ("bin", "sbin", "lib", "lib64")
LOAD_ORDER = "beolaunch.load-order"
#: Settings /init sources (shell KEY=VALUE): where libfuse is in the image.
STAGE3_ENV = "etc/beolaunch/stage3.env"
_MOUNT_POINTS = ("proc", "sys", "dev", "run", "var", "root", "mnt")

_ETC = {
    "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    ),
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
}

# Run by the target interpreter: import the agent, report sys.modules, paths, distributions.
_PROBE = r"""
import importlib, json, os, site, sys, sysconfig
from importlib import metadata
for name in sys.argv[1:]:
    importlib.import_module(name)
tops = {}
for name, module in list(sys.modules.items()):
    if "." in name:
        continue
    where = getattr(module, "__file__", None)
    paths = list(getattr(module, "__path__", []) or [])
    tops[name] = {"file": where, "path": [str(p) for p in paths]}
dists = {}
for top, names in metadata.packages_distributions().items():
    dists[top] = []
    for dist_name in names:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            continue
        dists[top].append(
            {"name": dist.metadata["Name"], "version": dist.version,
             "metadata": dist.read_text("METADATA") or ""}
        )
json.dump({
    "version": sys.version.split()[0],
    "executable": os.path.realpath(sys.executable),
    "stdlib": sysconfig.get_paths()["stdlib"],
    "dynload": [p for p in sys.path if p.endswith("lib-dynload")],
    "tops": tops,
    "dists": dists,
}, sys.stdout)
"""

# Run by the target interpreter: compile each (image path, host source) of the JSON on
# stdin into checked-hash .pyc bytes (valid whatever the archive's mtime), written as
# OUT/N.pyc; prints the cache tag. Files that do not compile are left out, as
# compileall does (Python then compiles nothing for them either: they never import).
_COMPILE = r"""
import importlib.util, json, os, sys
from importlib._bootstrap_external import _code_to_hash_pyc
out = sys.argv[1]
for number, (image, source) in enumerate(json.load(sys.stdin)):
    with open(source, "rb") as f:
        data = f.read()
    try:
        code = compile(data, "/" + image, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        continue
    pyc = _code_to_hash_pyc(code, importlib.util.source_hash(data), checked=True)
    with open(os.path.join(out, f"{number}.pyc"), "wb") as f:
        f.write(pyc)
print(sys.implementation.cache_tag)
"""

# The base interpreter's own default site directories (no venv, no user site).
_SITE_PROBE = "import json, site; print(json.dumps(site.getsitepackages()))"

Progress = Callable[[str], None]


def init_script() -> str:
    """The stage-3 ``/init`` shipped with Beolaunch (``bootsvc/stage3_init.sh``, whole)."""
    return initscript.shipped("stage3_init.sh")


def canonical(path: str) -> str:
    """``path`` (absolute, on the build host) as it is named in the merged-/usr image.

    ``/lib/x/y`` becomes ``usr/lib/x/y``: the image's ``/lib`` is a symlink to
    ``usr/lib``, so a host that keeps a real ``/lib`` still lands in one place.
    """
    parts = path.strip("/").split("/")
    if parts[0] in MERGED and len(parts) > 1:
        parts.insert(0, "usr")
    return "/".join(parts)


class _Tree:
    """Archive members keyed by path; a later regular file does not replace an earlier one."""

    def __init__(self) -> None:
        self.entries: dict[str, newc.Entry] = {}
        self.sources: dict[str, str] = {}  # image path -> host file it was read from

    def add(self, entry: newc.Entry) -> None:
        old = self.entries.get(entry.path)
        if old is not None and old != entry and not stat.S_ISDIR(old.mode):
            if stat.S_ISLNK(entry.mode):
                return  # a real file wins over a busybox applet link
            if not stat.S_ISLNK(old.mode):
                raise Stage3BuildError(
                    "image path", entry.path, "two different files want it; report this"
                )
        if old is not None and stat.S_ISDIR(old.mode) and stat.S_ISDIR(entry.mode):
            return
        self.entries[entry.path] = entry

    def add_host(self, host_path: str, *, follow: bool = False) -> None:
        """Copy the host file, symlink or directory (not its contents) at ``host_path``."""
        image = canonical(host_path)
        if image in MERGED:
            return  # the image's own top-level symlinks
        try:
            info = os.stat(host_path) if follow else os.lstat(host_path)
            if stat.S_ISLNK(info.st_mode):
                self.add(newc.symlink(image, os.readlink(host_path)))
            elif stat.S_ISDIR(info.st_mode):
                self.add(newc.directory(image))
            elif stat.S_ISREG(info.st_mode):
                perm = 0o755 if info.st_mode & 0o111 else 0o644
                self.add(newc.regular(image, Path(host_path).read_bytes(), perm))
            else:
                raise Stage3BuildError(
                    "file", host_path, "is not a regular file, directory or symlink"
                )
        except OSError as exc:
            raise Stage3BuildError("file", host_path, f"cannot be read ({exc.strerror})") from exc

    def add_tree(self, host_dir: str, image_dir: str, skip: Callable[[str], bool]) -> None:
        """Copy ``host_dir`` to ``image_dir`` (symlinks followed), leaving out names ``skip``
        accepts and every ``__pycache__``."""
        for top, dirs, files in os.walk(host_dir, followlinks=False):
            rel = os.path.relpath(top, host_dir)
            dirs[:] = sorted(
                d
                for d in dirs
                if d != "__pycache__" and not skip(os.path.normpath(os.path.join(rel, d)))
            )
            here = image_dir if rel == "." else f"{image_dir}/{rel}"
            self.add(newc.directory(here))
            for name in sorted(files):
                if skip(os.path.normpath(os.path.join(rel, name))) or name.endswith(".pyc"):
                    continue
                source = os.path.join(top, name)
                if not os.path.exists(source):
                    continue  # a dangling symlink (Debian's sitecustomize without /etc)
                try:
                    info = os.stat(source)
                    data = Path(source).read_bytes()
                except OSError as exc:
                    raise Stage3BuildError(
                        "file", source, f"cannot be read ({exc.strerror})"
                    ) from exc
                perm = 0o755 if info.st_mode & 0o111 else 0o644
                self.add(newc.regular(f"{here}/{name}", data, perm))
                self.sources[f"{here}/{name}"] = source

    def finish(self) -> list[newc.Entry]:
        """The members with every parent directory present."""
        for path in list(self.entries):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                old = self.entries.get(parent)
                if old is None:
                    self.entries[parent] = newc.directory(parent)
                elif not stat.S_ISDIR(old.mode):
                    raise Stage3BuildError(
                        "image path", path, f"its parent {parent} is not a directory"
                    )
        return list(self.entries.values())


def probe(python: Path, modules: Sequence[str] = AGENT_MODULES) -> dict[str, Any]:
    """What ``python`` imports for ``modules``: its version, real executable, stdlib,
    lib-dynload, top-level modules (``tops``) and their distributions (``dists``).

    Raises :class:`Stage3BuildError` when the interpreter fails (a module of the
    agent cannot be imported: the master's install is incomplete).
    """
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(
            [str(python), "-c", _PROBE, *modules],
            capture_output=True,
            timeout=300,
            check=False,
            env=env,
            cwd="/",
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise Stage3BuildError("python", str(python), f"cannot be run ({exc})") from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise Stage3BuildError(
            "python",
            str(python),
            f"importing the node agent failed ({' '.join(tail) or done.returncode}); "
            "install Beolaunch with its dependencies into this interpreter",
        )
    found: dict[str, Any] = json.loads(done.stdout)
    try:
        sites = subprocess.run(
            [found["executable"], "-I", "-c", _SITE_PROBE],
            capture_output=True,
            timeout=60,
            check=True,
            env=env,
            cwd="/",
        )
        found["site"] = json.loads(sites.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise Stage3BuildError(
            "python", found["executable"], f"site directories unknown ({exc})"
        ) from exc
    return found


def compile_pycs(python: str, sources: dict[str, str]) -> dict[str, bytes]:
    """Checked-hash ``.pyc`` bytes, keyed by their image path (``__pycache__/M.TAG.pyc``),
    for ``sources`` (image path -> host file), compiled by ``python`` itself.

    Checked-hash, not timestamp, pycs: the archive stamps every file with one
    mtime, so the host's own pycs (stamped with the source's mtime) would be
    recompiled on every node at every boot. Raises :class:`Stage3BuildError`
    when the interpreter fails.
    """
    order = sorted(sources.items())
    with tempfile.TemporaryDirectory(prefix="beolaunch-stage3-pyc-") as out:
        try:
            done = subprocess.run(
                [python, "-I", "-c", _COMPILE, out],
                input=json.dumps(order).encode(),
                capture_output=True,
                timeout=600,
                check=False,
                cwd="/",
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise Stage3BuildError("python", python, f"cannot compile ({exc})") from exc
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise Stage3BuildError("python", python, f"compiling failed: {' '.join(tail)}")
        tag = done.stdout.decode().strip()
        pycs: dict[str, bytes] = {}
        for number, (image, _source) in enumerate(order):
            try:
                data = Path(out, f"{number}.pyc").read_bytes()
            except FileNotFoundError:
                continue
            directory, name = os.path.split(image)
            pycs[f"{directory}/__pycache__/{name[: -len('.py')]}.{tag}.pyc"] = data
    return pycs


def site_dir(sites: Sequence[str]) -> str:
    """The directory the image's interpreter searches by default: the first of the
    base interpreter's site directories not under /usr/local (Debian:
    /usr/lib/python3/dist-packages; elsewhere .../site-packages)."""
    usable = [s for s in sites if not s.startswith("/usr/local/")]
    if not usable:
        raise Stage3BuildError(
            "python", " ".join(sites) or "(none)", "has no site directory outside /usr/local"
        )
    return usable[0]


def third_party(found: dict[str, Any]) -> tuple[list[str], dict[str, list[dict[str, str]]]]:
    """Host paths of the top-level modules and packages outside the standard library
    (each package directory, or a single module file), and their distributions."""
    stdlib = os.path.realpath(found["stdlib"])
    skip_roots = [stdlib, *(os.path.realpath(d) for d in found["dynload"])]
    chosen: set[str] = set()
    dists: dict[str, list[dict[str, str]]] = {}
    for name, where in sorted(found["tops"].items()):
        if name == "__main__" or name.startswith("__editable__") or name == "_distutils_hack":
            continue
        candidates: list[str] = []
        if where["path"]:
            candidates = [os.path.realpath(p) for p in where["path"]]
        elif where["file"]:
            candidates = [os.path.realpath(where["file"])]
        for path in candidates:
            if any(path == r or path.startswith(r + "/") for r in skip_roots):
                continue
            chosen.add(path)
            for dist in found["dists"].get(name, []):
                dists.setdefault(dist["name"], []).append(dist)
    return sorted(chosen), dists


def _stdlib_skip(rel: str) -> bool:
    first = rel.split("/")[0]
    if first in PRUNED_STDLIB or first.startswith("config-"):
        return True
    if first == "lib-dynload" and "/" in rel:
        return os.path.basename(rel).startswith(PRUNED_DYNLOAD)
    return False


def _package_skip(rel: str) -> bool:
    return rel.split("/")[0] in ("tests", "test") or rel.endswith(SOURCE_SUFFIXES)


def find_library(name: str, dirs: Iterable[str] = LIB_DIRS) -> Path:
    """The first ``dirs/name`` that exists. Raises :class:`Stage3BuildError` if none."""
    for directory in dirs:
        candidate = Path(directory) / name
        if candidate.exists():
            return candidate
    raise Stage3BuildError(
        "library", name, "not found on the master; install it (Debian: libfuse2)"
    )


def builtin_modules(modules_dir: Path) -> frozenset[str]:
    """Names of the modules built into the kernel (``modules.builtin``; none without it):
    a kernel with NFS or FUSE built in needs no ``.ko`` for them."""
    try:
        text = (modules_dir / "modules.builtin").read_text()
    except OSError:
        return frozenset()
    return frozenset(
        module_name(line.rsplit("/", 1)[-1].split(".ko", 1)[0])
        for line in text.splitlines()
        if line.strip()
    )


def kernel_module_entries(modules_dir: Path) -> tuple[list[newc.Entry], list[str]]:
    """:data:`KERNEL_MODULES` and their dependencies from ``modules_dir``, at their
    place under ``usr/lib/modules/RELEASE`` (xz or gzip modules unpacked: busybox
    insmod wants plain ELF), and the load-order file. Returns the entries and the
    file names."""
    index = ModuleIndex.from_dir(modules_dir)
    builtin = builtin_modules(modules_dir)
    files = index.load_order(m for m in KERNEL_MODULES if module_name(m) not in builtin)
    base = f"usr/lib/modules/{modules_dir.name}"
    members: list[newc.Entry] = []
    names: list[str] = []
    for rel in files:
        source = modules_dir / rel
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise Stage3BuildError(
                "kernel module", str(source), f"cannot be read ({exc.strerror})"
            ) from exc
        if rel.endswith(".xz"):
            data, rel = lzma.decompress(data), rel[: -len(".xz")]
        elif rel.endswith(".gz"):
            data, rel = gzip.decompress(data), rel[: -len(".gz")]
        elif not rel.endswith(".ko"):
            raise Stage3BuildError(
                "kernel module", str(source), "is compressed in a way busybox insmod cannot load"
            )
        members.append(newc.regular(f"{base}/{rel}", data))
        names.append(rel)
    members.append(newc.regular(f"{base}/{LOAD_ORDER}", "".join(f"{n}\n" for n in names).encode()))
    return members, names


def build(
    modules_dir: Path,
    *,
    busybox: Path = Path("/usr/bin/busybox"),
    python: Path | None = None,
    libfuse: Path | None = None,
    fusermount: Path = Path("/usr/bin/fusermount"),
    script: str | None = None,
    mtime: int = 0,
    progress: Progress = lambda _line: None,
) -> tuple[bytes, dict[str, Any]]:
    """The gzip-compressed newc stage-3 image and its ``built_from`` record.

    ``python`` (default: the running interpreter, the master's venv) is probed
    for what the node agent imports; ``modules_dir`` is the kernel's module tree
    (``.../lib/modules/RELEASE``, with ``modules.dep``); ``script`` replaces the
    shipped ``/init``. Same inputs, same bytes. Raises :class:`Stage3BuildError`
    (and ModuleIndexError for a module tree without ``modules.dep``).
    """
    started = time.monotonic()
    script = init_script() if script is None else script
    if not script.startswith("#!"):
        raise Stage3BuildError("init script", script[:40], "must start with '#!'")
    python = Path(sys.executable) if python is None else python
    progress(f"probing {python} for what the node agent imports")
    found = probe(python)
    stdlib = found["stdlib"]
    site = canonical(site_dir(found["site"]))
    packages, dists = third_party(found)
    libfuse = find_library("libfuse.so.2") if libfuse is None else libfuse

    progress(f"collecting Python {found['version']} ({found['executable']}), stdlib {stdlib}")
    tree = _Tree()
    for link in MERGED:
        tree.add(newc.symlink(link, f"usr/{link}"))
    tree.add_tree(stdlib, canonical(stdlib), _stdlib_skip)
    for dynload in found["dynload"]:
        if not os.path.realpath(dynload).startswith(os.path.realpath(stdlib) + "/"):
            tree.add_tree(dynload, canonical(dynload), _stdlib_skip)
    progress(f"collecting {len(packages)} top-level packages into /{site}")
    for path in packages:
        if os.path.isdir(path):
            tree.add_tree(path, f"{site}/{os.path.basename(path)}", _package_skip)
        else:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise Stage3BuildError("module", path, f"cannot be read ({exc.strerror})") from exc
            tree.add(newc.regular(f"{site}/{os.path.basename(path)}", data))
            tree.sources[f"{site}/{os.path.basename(path)}"] = path
    versions: dict[str, str] = {}
    for name, records in sorted(dists.items()):
        record = records[0]
        versions[name] = record["version"]
        info = f"{site}/{name.replace('-', '_')}-{record['version']}.dist-info"
        tree.add(newc.regular(f"{info}/METADATA", record["metadata"].encode()))

    sources = {i: h for i, h in tree.sources.items() if i.endswith(".py")}
    progress(f"compiling {len(sources)} Python files (checked-hash .pyc)")
    for image_path, data in compile_pycs(found["executable"], sources).items():
        tree.add(newc.regular(image_path, data))

    progress("resolving shared libraries (cachefs.closure)")
    elves = sorted(
        source
        for source in tree.sources.values()
        if source.endswith(".so") or ".so." in os.path.basename(source)
    )
    includes = [*elves, str(libfuse), str(fusermount)]
    try:
        closure = Resolver().resolve(
            found["executable"], env={"PATH": "/usr/bin:/bin"}, includes=includes, cwd="/"
        )
    except ClosureError as exc:
        raise Stage3BuildError("closure", found["executable"], str(exc)) from exc
    copied = set(tree.sources.values())
    for path in closure.paths:
        if "/__pycache__/" in path or path.endswith(".pyc") or path in copied:
            continue
        tree.add_host(path)
    tree.add(newc.symlink("usr/bin/python3", os.path.basename(found["executable"])))
    tree.add(newc.symlink("usr/bin/python", os.path.basename(found["executable"])))

    progress(f"adding busybox {busybox}, /etc, kernel modules of {modules_dir.name}, /init")
    try:
        busybox_bytes = busybox.read_bytes()
    except OSError as exc:
        raise Stage3BuildError("busybox", str(busybox), f"cannot be read ({exc.strerror})") from exc
    tree.add(newc.regular("usr/bin/busybox", busybox_bytes, 0o755))
    applets = busybox_applets(busybox)
    for member in _entries_fixed(script, "/" + canonical(str(libfuse))):
        tree.add(member)
    modules, module_names = kernel_module_entries(modules_dir)
    for member in modules:
        tree.add(member)
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            tree.add(newc.symlink(f"usr/bin/{applet}", "busybox"))

    members = tree.finish()
    regular = [m for m in members if stat.S_ISREG(m.mode)]
    uncompressed = sum(len(m.data) for m in regular)
    progress(f"compressing {len(members)} entries, {uncompressed} bytes of file data")
    archive = newc.write(members, mtime=mtime)
    image = gzip.compress(archive, compresslevel=9, mtime=0)
    seconds = time.monotonic() - started
    progress(
        f"stage 3: {len(image)} bytes compressed ({len(archive)} uncompressed) in {seconds:.1f} s"
    )
    built_from: dict[str, Any] = {
        "python_version": found["version"],
        "python": found["executable"],
        "site_packages": "/" + site,
        "packages": versions,
        "kernel_release": modules_dir.name,
        "kernel_modules": [Path(n).name for n in module_names],
        "busybox": str(busybox),
        "busybox_sha256": hashlib.sha256(busybox_bytes).hexdigest(),
        "libfuse": str(libfuse),
        "init_sha256": hashlib.sha256(script.encode()).hexdigest(),
        "files": len(regular),
        "entries": len(members),
        "uncompressed_bytes": len(archive),
        "file_bytes": uncompressed,
        "mtime": mtime,
    }
    return image, built_from


def _entries_fixed(script: str, libfuse: str) -> list[newc.Entry]:
    """/init, /etc (with ``beolaunch/stage3.env`` for /init), /dev/console, mount points."""
    members = [
        newc.regular("init", script.encode(), 0o755),
        newc.regular(STAGE3_ENV, f"FUSE_LIBRARY_PATH={libfuse}\n".encode()),
        newc.char_device("dev/console", 5, 1),
        newc.directory("tmp", 0o1777),
        newc.directory("root", 0o700),
    ]
    members += [newc.directory(path) for path in _MOUNT_POINTS if path != "root"]
    members += [newc.directory(f"usr/{link}") for link in MERGED]
    members += [newc.directory(p) for p in ("var/cache/beolaunch", "var/lib/beolaunch", "var/log")]
    members += [newc.regular(path, text.encode()) for path, text in _ETC.items()]
    return members
