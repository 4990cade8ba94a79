"""The closure of a program: every path that must exist for it to run elsewhere.

:func:`resolve` does for a program what the kernel, glibc's ld.so and the
script interpreters would do, without running it (except a Python interpreter
asked which modules a script imports, see :mod:`cachefs.closure.script`):

- the program, found through the user's ``PATH``;
- for a ``#!`` script, its interpreter (``/usr/bin/env NAME`` through ``PATH``),
  recursively, and for Python the modules it imports and the startup files;
- for an ELF file, PT_INTERP and the DT_NEEDED libraries, searched as ld.so does
  (:mod:`cachefs.closure.search`, :mod:`cachefs.closure.loader`);
- ``includes``: files, directories (recursively) and globs, ELF ones with
  their libraries as if dlopen'ed by the program.

:func:`resolve_command` does the same for a whole command line: an
interpreter's script, ``-m`` module or inline code, and what they load or run
(:mod:`cachefs.closure.argv`).

Each path is kept as the loader names it: every symlink met resolving it is
in the closure as a symlink (``/lib64``, ``/usr/lib64/ld-linux-x86-64.so.2``),
with the file it ends at. Missing libraries are collected and reported together.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Required, TypedDict, Unpack

from cachefs.closure.argv import CommandAnalysis, command_key
from cachefs.closure.builder import Builder
from cachefs.closure.host import LoaderConfig
from cachefs.closure.session import Session
from cachefs.closure.which import find_program
from cachefs.errors import IncludeNotFoundError

__all__ = [
    "Closure",
    "LoaderConfig",
    "ResolveOptions",
    "Resolver",
    "command_key",
    "find_program",
    "resolve",
    "resolve_command",
]


@dataclass(frozen=True)
class Closure:
    """``paths``: sorted, absolute, normalised; files, symlinks and the few
    directories that must exist even when empty. ``needed_by``: each path ->
    the paths that caused it to be included (empty for the program itself and
    for includes). ``key``: a stable name of what runs, for sets of files
    learned per program: the program's path (``root``, the default), then for an
    interpreter the script's real path, ``-m MODULE``, or ``-c``/``-e`` and the
    first 16 hex digits of the code's sha256."""

    root: str
    paths: tuple[str, ...]
    needed_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.root)


class ResolveOptions(TypedDict, total=False):
    """The keyword arguments of :func:`resolve` and :func:`resolve_command`:
    ``env`` (the program's environment), ``includes`` (paths and globs, relative
    to ``cwd``), ``cwd`` (None: the current directory), ``learned`` (as
    :func:`resolve` says)."""

    env: Required[Mapping[str, str]]
    includes: Sequence[str]
    cwd: str | None
    learned: Sequence[str]


class Resolver:
    """Resolves closures, sharing parsed files between calls (one moment in time)."""

    def __init__(
        self, ld_so_cache: str = "/etc/ld.so.cache", config: LoaderConfig | None = None
    ) -> None:
        self._session = Session(ld_so_cache, config)

    def resolve(self, program: str, **options: Unpack[ResolveOptions]) -> Closure:
        """See :func:`resolve`."""
        env, where = options["env"], _where(options)
        root = find_program(program, env.get("PATH"), where)
        builder = Builder(self._session, env, where)
        builder.add_program(root, needer=None)
        _add_extras(builder, options, where)
        return _closure(root, builder, root)

    def resolve_command(self, argv: Sequence[str], **options: Unpack[ResolveOptions]) -> Closure:
        """See :func:`resolve_command`."""
        env, where = options["env"], _where(options)
        builder = Builder(self._session, env, where)
        root = CommandAnalysis(builder, env, where).add(argv)
        _add_extras(builder, options, where)
        return _closure(root, builder, command_key(argv, env=env, cwd=where))


def _where(options: ResolveOptions) -> str:
    cwd = options.get("cwd")
    return os.path.abspath(cwd if cwd is not None else os.getcwd())


def _add_extras(builder: Builder, options: ResolveOptions, where: str) -> None:
    """Add the includes and the learned paths, then finish (missing libraries)."""
    for pattern in options.get("includes", ()):
        for path in expand_include(pattern, where):
            builder.add_include(path)
    for path in options.get("learned", ()):
        if os.path.isabs(path) and os.path.lexists(path):
            builder.add_path(os.path.normpath(path), None)
    builder.finish()


def _closure(root: str, builder: Builder, key: str) -> Closure:
    needed_by = {p: tuple(sorted(w)) for p, w in builder.needed_by.items()}
    return Closure(root, tuple(sorted(needed_by)), MappingProxyType(needed_by), key)


def resolve(program: str, **options: Unpack[ResolveOptions]) -> Closure:
    """The closure of ``program`` run with environment ``env`` from ``cwd``.

    ``learned``: absolute paths added as they are, with the symlinks on their
    way but nothing they need (files an earlier run fetched late: what they
    needed was fetched and learned too; a library the loader found by a path
    of its own, like the JVM's libjvm.so, would be "missing" to a search). A
    learned path that no longer exists is left out.
    Only ``env`` is read for PATH and LD_LIBRARY_PATH, never os.environ.
    Raises ProgramNotFoundError, MissingLibrariesError (every library not
    found, with who needed it), IncludeNotFoundError, BadObjectError (a file
    ld.so would refuse) or InterpreterError (a Python that would not start).
    """
    return Resolver().resolve(program, **options)


def resolve_command(argv: Sequence[str], **options: Unpack[ResolveOptions]) -> Closure:
    """The closure of the command line ``argv`` (program first) run with ``env``
    from ``cwd``: :func:`resolve` of the program, plus what an interpreter among
    python, perl, sh, dash and bash is given to run (a script, ``-m`` module,
    ``-c``/``-e`` code) and what that imports, loads or runs
    (:mod:`cachefs.closure.argv`). ``Closure.key`` names what runs
    (:func:`command_key`, which gives it before resolving); ``learned`` as
    for :func:`resolve`.

    Raises what :func:`resolve` raises, EmptyCommandError, ScriptNotFoundError
    (the script argument is not a readable file), InterpreterError (a module
    not found for ``-m``, code that does not compile, a perl that does not run).
    """
    return Resolver().resolve_command(argv, **options)


def expand_include(pattern: str, cwd: str) -> list[str]:
    """The absolute paths an include names: itself if it exists, else its glob matches.
    Raises IncludeNotFoundError when nothing matches."""
    absolute = os.path.normpath(os.path.join(cwd, pattern))
    if os.path.lexists(absolute):
        return [absolute]
    matches = sorted(glob.glob(absolute, recursive=True))
    if not matches:
        raise IncludeNotFoundError(pattern)
    return [os.path.normpath(m) for m in matches]
