"""``#!`` scripts: the interpreter chain, and the files a Python program opens.

Linux reads at most the first 255 bytes of a script (BINPRM_BUF_SIZE 256, before
5.1 only 127 were honoured: the line is cut there); the interpreter is the first
word, everything after it one single argument. ``/usr/bin/env NAME`` is followed
through the user's ``PATH``, like env's execvp.

Python modules are listed by the *target* interpreter, never by ours: a
subprocess of that interpreter, in the user's environment, runs a small
modulefinder program (:data:`_PROBE`). Its sys.path, version, cache tag and
extension suffixes are then the right ones even when it is another Python than
the one running cachefs. The same subprocess reports what ``python -c pass``
imports on start (sys.modules before the probe imports anything: site,
encodings, codecs, ...). The probe's own imports (json, modulefinder) are not
reported, and ``.pth`` files are not listed (site tolerates their absence;
present, site decodes them with the node's locale codec, e.g. encodings.ascii
under C, which the probe in the submitter's locale did not load).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cachefs.errors import InterpreterError

SHEBANG_LIMIT = 256
_PYTHON = re.compile(r"python[0-9.]*$")


@dataclass(frozen=True)
class Shebang:
    interpreter: str
    argument: str | None


def read_shebang(head: bytes) -> Shebang | None:
    """The ``#!`` line of a file starting with ``head`` (None if it has none)."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:SHEBANG_LIMIT].split(b"\n", 1)[0].decode("utf-8", "surrogateescape")
    line = line.strip(" \t")
    if not line:
        return None
    parts = re.split(r"[ \t]+", line, maxsplit=1)
    return Shebang(parts[0], parts[1].rstrip(" \t") if len(parts) > 1 else None)


def env_command(shebang: Shebang) -> str | None:
    """NAME in ``#!/usr/bin/env [-S] [VAR=x] NAME ...``, or None if not an env line."""
    if os.path.basename(shebang.interpreter) != "env" or shebang.argument is None:
        return None
    for word in shebang.argument.split():
        if word.startswith("-") or "=" in word:
            continue
        return word
    return None


def is_python(path: str) -> bool:
    """True if ``path`` (after symlinks) names a CPython interpreter (python, python3.11)."""
    return _PYTHON.match(os.path.basename(path)) is not None


# Run by the target interpreter: argv[1] is what runs ("" for the bare interpreter,
# "script" or "module"), argv[2] the script's path or the module's name, argv[3]
# sys.path[0] of that run ("" when it has none: -I, -P). sys.modules is read first
# thing, before this program imports anything itself. A module is found by
# modulefinder, statically (importlib.util.find_spec runs its packages' __init__),
# and only if modulefinder cannot (a namespace package) by find_spec.
_PROBE = r"""
import sys
_start = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
import importlib.util, json, os
out = {"start": [f for f in _start if isinstance(f, str)], "modules": [], "dirs": []}
out["dirs"] = [p for p in sys.path if p.endswith("lib-dynload") and os.path.isdir(p)]
mode, target, path0 = sys.argv[1:4]
if mode:
    import modulefinder
    safe = getattr(sys.flags, "safe_path", False) or sys.flags.isolated
    path = ([path0] if path0 else []) + (sys.path if safe else sys.path[1:])
    finder = modulefinder.ModuleFinder(path=path)
    if mode == "script":
        finder.run_script(target)
    else:
        finder.import_hook("runpy")
        try:
            finder.import_hook(target)
            found = finder.modules.get(target)
            if found is None:
                raise ImportError(target)
            if found.__path__:
                finder.import_hook(target + ".__main__")
        except (ImportError, AttributeError):  # a namespace package: ask importlib
            spec = importlib.util.find_spec(target)
            if spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.util.find_spec(target + ".__main__")
            if spec is None or not spec.has_location:
                raise ImportError("No module named " + repr(target)) from None
            finder.run_script(spec.origin)
    out["modules"] = [m.__file__ for m in finder.modules.values() if m.__file__]
files = set()
for f in out["start"] + out["modules"]:
    files.add(f)
    if f.endswith(".py"):
        try:
            pyc = importlib.util.cache_from_source(f)
        except (NotImplementedError, ValueError):
            continue
        if os.path.isfile(pyc):
            files.add(pyc)
if sys.prefix != sys.base_prefix:  # a virtual environment: getpath reads pyvenv.cfg
    cfg = os.path.join(sys.prefix, "pyvenv.cfg")
    if os.path.isfile(cfg):
        files.add(cfg)
out["files"] = sorted(files)
json.dump(out, sys.stdout)
"""


@dataclass(frozen=True)
class PythonFiles:
    """What a Python interpreter opens: ``files`` (sources, their cached .pyc,
    extension modules) and ``dirs`` that must exist even if empty (lib-dynload,
    a landmark of getpath)."""

    files: tuple[str, ...]
    extensions: tuple[str, ...]
    dirs: tuple[str, ...]


@dataclass(frozen=True)
class PythonRun:
    """What an interpreter is asked to run, for the probe: nothing (its startup),
    a ``script`` path, or a ``module`` (``-m``). ``path0`` is that run's
    ``sys.path[0]`` (None: none, as with -I or -P); ``options`` are the command's
    options that change startup and ``sys.path`` (-E -s -S -I -P), given to the
    probe too. ``label`` names the run in errors."""

    mode: Literal["", "script", "module"] = ""
    target: str = ""
    path0: str | None = None
    options: tuple[str, ...] = ()
    label: str = "(startup)"

    @classmethod
    def script(cls, path: str, options: tuple[str, ...] = ()) -> PythonRun:
        """``python [options] path``: sys.path[0] is the directory of the script,
        symlinks resolved (CPython's _PyPathConfig_ComputeSysPath0)."""
        safe = any(o in ("-I", "-P") for o in options)
        path0 = None if safe else os.path.dirname(os.path.realpath(path))
        return cls("script", path, path0, options, path)


def python_files(
    interpreter: str,
    script: str | None,
    *,
    env: Mapping[str, str],
    cwd: str | None,
    run: PythonRun | None = None,
) -> PythonFiles:
    """The files ``interpreter`` opens to start and to import what ``script`` (or
    ``run``, which takes precedence) imports.

    Raises InterpreterError if the interpreter cannot be run or fails (a module
    not found, a script that does not compile).
    """
    if run is None:
        run = PythonRun.script(script) if script else PythonRun()
    argv = [interpreter, *run.options, "-c", _PROBE, run.mode, run.target, run.path0 or ""]
    try:
        done = subprocess.run(
            argv, env=dict(env), cwd=cwd, capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InterpreterError(interpreter, run.label, str(exc)) from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise InterpreterError(
            interpreter,
            run.label,
            f"exit status {done.returncode}: {' '.join(tail) or 'no message'}",
        )
    try:
        out = json.loads(done.stdout)
        files = tuple(str(f) for f in out["files"] if os.path.isabs(f))
        dirs = tuple(str(d) for d in out["dirs"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InterpreterError(interpreter, run.label, f"bad probe output: {exc}") from exc
    extensions = tuple(f for f in files if not f.endswith((".py", ".pyc")))
    return PythonFiles(files, extensions, dirs)
