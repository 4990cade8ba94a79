"""Gathering one closure: programs (ELF or ``#!``), their link maps, Python files and
includes, into paths (with every symlink on the way) and who needed each."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from cachefs.closure.elf import ELFMAG, ElfInfo
from cachefs.closure.loader import LinkMap, link_map
from cachefs.closure.script import (
    SHEBANG_LIMIT,
    PythonRun,
    env_command,
    is_python,
    python_files,
    read_shebang,
)
from cachefs.closure.session import Session
from cachefs.closure.which import find_program
from cachefs.errors import (
    BadObjectError,
    IncludeUnreadableError,
    MissingLibrariesError,
    ProgramNotFoundError,
)

# Linux follows at most this many nested #! interpreters (fs/exec.c, 5 with the first).
MAX_INTERPRETER_DEPTH = 4


class Builder:
    def __init__(self, session: Session, env: Mapping[str, str], cwd: str) -> None:
        self._session = session
        self._env = env
        self._cwd = cwd
        self.needed_by: dict[str, set[str]] = {}
        self._maps: dict[str, LinkMap] = {}  # program real path -> its link map
        self._main: LinkMap | None = None
        self._runners: dict[str, str] = {}  # script real path -> the ELF that runs it
        self._python_done: set[tuple[str, PythonRun]] = set()
        # Link maps of programs added as optional: their missing libraries fail nothing.
        self._optional: set[str] = set()

    def add_path(self, path: str, needer: str | None) -> str:
        """Add ``path`` and every symlink met resolving it; returns its physical path."""
        links, final = self._session.chain(path)
        for p in (*links, final):
            who = self.needed_by.setdefault(p, set())
            if needer is not None and needer != p:
                who.add(needer)
        return final

    def add_program(self, path: str, needer: str | None, *, optional: bool = False) -> str:
        """Add what running absolute ``path`` needs; returns the physical path of the
        ELF executable that ends up running it (itself, or its last interpreter).
        The first program added is the one whose executable dlopens includes.

        ``optional``: a program found by analysis, not named by the user (a command
        in a shell script): libraries its new link maps miss are not reported by
        :meth:`finish` (the caller catches what this raises and goes on).
        """
        before = set(self._maps)
        try:
            runner = self._program(path, needer, 0)
        finally:
            if optional:
                self._optional.update(set(self._maps) - before)
        if self._main is None:
            self._main = self._maps[runner]
        return runner

    def add_python(
        self, runner: str, run: PythonRun, needer: str, *, hidden: str | None = None
    ) -> None:
        """Add what the Python interpreter ``runner`` (a program already added) opens
        to do ``run``; files under the directory ``hidden`` (a temporary copy of
        ``-c`` code) are left out."""
        self._add_python(self._maps[runner], run, needer, hidden)

    def is_script(self, path: str) -> bool:
        """True if ``path`` was added as a #! script (not an ELF file)."""
        return self._session.realpath(path) in self._runners

    def _program(self, path: str, needer: str | None, depth: int) -> str:
        """Add ``path`` as an executed file; returns the physical path of the ELF
        executable that ends up running (itself, or its last interpreter)."""
        real = self.add_path(path, needer)
        if real in self._maps:
            return real
        if real in self._runners:
            return self._runners[real]
        head = self._head(real)
        if head.startswith(ELFMAG):
            info = self._elf(real)
            links = link_map(
                self._session,
                path,
                info,
                library_path=None if _secure(real) else self._env.get("LD_LIBRARY_PATH"),
                preload=None if _secure(real) else self._env.get("LD_PRELOAD"),
                cwd=self._cwd,
            )
            self._maps[real] = links
            if is_python(real):
                self._add_python(links, PythonRun(), real)
            return real
        shebang = read_shebang(head)
        if shebang is None:
            raise BadObjectError(path, "neither an ELF file nor a #! script: cannot be executed")
        if depth >= MAX_INTERPRETER_DEPTH:
            raise BadObjectError(path, "too many levels of #! interpreters")
        interpreter = os.path.join(self._cwd, shebang.interpreter)
        if not os.path.isfile(interpreter):
            raise BadObjectError(path, f"its #! interpreter {shebang.interpreter} is not a file")
        runner = self._program(interpreter, real, depth + 1)
        command = env_command(shebang)
        if command is not None:
            try:
                found = find_program(command, self._env.get("PATH"), self._cwd)
            except ProgramNotFoundError as exc:
                raise BadObjectError(path, f"#! {shebang.interpreter}: {exc}") from exc
            runner = self._program(found, real, depth + 1)
        self._runners[real] = runner
        if is_python(runner):
            self._add_python(self._maps[runner], PythonRun.script(path), real)
        return runner

    def add_include(self, path: str, seen: set[str] | None = None) -> None:
        """Add an included path: a file (ELF ones with their libraries), a symlink, or a
        directory with everything under it."""
        seen = set() if seen is None else seen
        final = self.add_path(path, None)
        if final in seen:
            return
        seen.add(final)
        if os.path.isdir(final):
            try:
                with os.scandir(final) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as exc:  # was a traceback out of beosub
                raise IncludeUnreadableError(path, exc.strerror or str(exc)) from exc
            for entry in entries:
                self.add_include(entry.path, seen)
            return
        if not os.path.isfile(final) or not self._head(final).startswith(ELFMAG):
            return
        info = self._elf(final)
        main = self._main
        if main is not None and main.main.info.compatible(info):
            main.dlopen(path, info, None)
        elif info.interp is not None:
            self._program(path, None, 0)

    def finish(self) -> None:
        """Record every link map's objects; raise MissingLibrariesError naming all missing."""
        missing: list[tuple[str, str]] = []
        for key, links in self._maps.items():
            for obj in links.objects:
                who = links.needed_by.get(obj.real, [])
                self.add_path(obj.path, None)
                links_of_path, final = self._session.chain(obj.path)
                for p in (*links_of_path, final):
                    self.needed_by[p].update(w for w in who if w != p)
            if key in self._optional:
                continue
            missing.extend(m for m in links.missing if m not in missing)
        if missing:
            raise MissingLibrariesError(missing)

    def _add_python(
        self, links: LinkMap, run: PythonRun, needer: str, hidden: str | None = None
    ) -> None:
        interpreter = links.main.path
        if (interpreter, run) in self._python_done:
            return
        self._python_done.add((interpreter, run))
        found = python_files(interpreter, None, env=self._env, cwd=self._cwd, run=run)
        for f in (*found.files, *found.dirs):
            if hidden is not None and f.startswith(hidden.rstrip("/") + "/"):
                continue
            self.add_path(f, needer)
        for extension in found.extensions:
            try:
                info = self._session.elf(extension)
            except OSError:
                continue
            if info is not None and links.main.info.compatible(info):
                links.dlopen(extension, info, needer)

    def _head(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read(SHEBANG_LIMIT)
        except OSError as exc:
            raise BadObjectError(path, f"cannot be read: {exc.strerror}") from exc

    def _elf(self, path: str) -> ElfInfo:
        try:
            info = self._session.elf(path)
        except OSError as exc:
            raise BadObjectError(path, f"cannot be read: {exc.strerror}") from exc
        if info is None:
            raise BadObjectError(path, "not an ELF file")
        return info


def _secure(path: str) -> bool:
    """True if ld.so runs ``path`` in secure mode (set-user/group-ID): it then
    ignores LD_LIBRARY_PATH and LD_PRELOAD (as far as the closure is concerned)."""
    try:
        return bool(os.stat(path).st_mode & (stat.S_ISUID | stat.S_ISGID))
    except OSError:
        return False
