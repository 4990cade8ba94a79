"""What a command line runs beyond its program: the script or code an interpreter is given.

The program is found and added as :func:`cachefs.closure.resolve` does. If it
is an interpreter itself (an ELF file, not a ``#!`` script), its arguments are
read as that interpreter reads them:

- Python (:mod:`.pyargs`): a script, ``-m MODULE`` or ``-c CODE``, analysed by
  the target interpreter's probe (:mod:`.script`) like a ``#!`` script; the
  code of ``-c`` goes through a temporary file that is not shipped;
- perl (:mod:`.perlargs`, :mod:`.perl`): the script or ``-e`` code, ``-M``
  modules and ``-I`` directories; modules in the target perl's @INC;
- sh, dash, bash (:mod:`.shell`): the script, or ``-c`` code; the commands
  found in it are added as programs (best effort, see :meth:`_command`).

A ``#!`` script whose interpreter is perl or a shell is analysed the same way
(its Python counterpart already is, by the builder). Scripts met as commands
of a shell text are analysed in turn, :data:`MAX_SCRIPT_DEPTH` deep.

The closure's key names what runs (learned sets of files are kept per key):
the program's path, then the script's real path, ``-m MODULE``, or the flag
of inline code (``-c``, ``-e``) and the first 16 hex digits of its sha256.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Literal

from cachefs.closure.builder import Builder
from cachefs.closure.elf import ELFMAG
from cachefs.closure.perl import MAX_SOURCE_BYTES, perl_files, perl_inc
from cachefs.closure.perlargs import PerlCommand, parse_perl
from cachefs.closure.pyargs import parse_python
from cachefs.closure.script import SHEBANG_LIMIT, PythonRun, is_python, read_shebang
from cachefs.closure.shell import command_words, parse_shell
from cachefs.closure.which import find_program
from cachefs.errors import ClosureError, EmptyCommandError, ScriptNotFoundError

#: How deep scripts found as commands of scripts are analysed (the submitted one is 0).
MAX_SCRIPT_DEPTH = 3

Kind = Literal["python", "perl", "shell", ""]
_PERL = re.compile(r"perl(5[0-9.]*)?$")
_SHELLS = frozenset({"sh", "dash", "bash"})


def interpreter_kind(*paths: str) -> Kind:
    """Which interpreter any of ``paths`` names (the program as found, its real path)."""
    for path in paths:
        name = os.path.basename(path)
        if is_python(path):
            return "python"
        if _PERL.match(name):
            return "perl"
        if name in _SHELLS:
            return "shell"
    return ""


def code_key(program: str, flag: str, code: str) -> str:
    digest = hashlib.sha256(code.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{program} {flag} {digest[:16]}"


def command_key(argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None) -> str:
    """The ``Closure.key`` of ``argv`` without resolving its closure (so it can be
    asked for before: the files learned under it). Reads only the program's
    first bytes and the arguments.

    Raises EmptyCommandError, ProgramNotFoundError.
    """
    if not argv:
        raise EmptyCommandError()
    where = os.path.abspath(cwd if cwd is not None else os.getcwd())
    root = find_program(argv[0], env.get("PATH"), where)
    real = os.path.realpath(root)
    if not _is_elf(real):  # a #! script (or no program at all): its path names it
        return root
    kind, args = interpreter_kind(root, real), argv[1:]
    if kind == "python":
        python = parse_python(args)
        if python.kind == "script":
            return f"{root} {os.path.realpath(os.path.join(where, python.value))}"
        if python.kind == "module":
            return f"{root} -m {python.value}"
        if python.kind == "code":
            return code_key(root, "-c", python.value)
    elif kind == "perl":
        perl = parse_perl(args)
        if perl.script is not None:
            return f"{root} {os.path.realpath(perl_script(perl, env, where))}"
        if perl.code:
            return code_key(root, "-e", "\n".join(perl.code))
    elif kind == "shell":
        shell = parse_shell(args)
        if shell.script is not None:
            return f"{root} {os.path.realpath(os.path.join(where, shell.script))}"
        if shell.code is not None:
            return code_key(root, "-c", shell.code)
    return root


def perl_script(command: PerlCommand, env: Mapping[str, str], cwd: str) -> str:
    """The path of the script ``command`` names (``-S``: looked up in PATH first)."""
    name = command.script or ""
    if command.search_path and "/" not in name:
        try:
            return find_program(name, env.get("PATH"), cwd)
        except ClosureError:
            pass  # perl -S falls back on the name itself
    return os.path.normpath(os.path.join(cwd, name))


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(ELFMAG)) == ELFMAG
    except OSError:
        return False


class CommandAnalysis:
    """Adds to ``builder`` what a command line runs; one per closure."""

    def __init__(self, builder: Builder, env: Mapping[str, str], cwd: str) -> None:
        self._builder = builder
        self._env = env
        self._cwd = cwd
        self._scanned: set[str] = set()  # real paths of scripts analysed
        self._inc: dict[str, tuple[str, ...]] = {}  # perl -> its @INC

    def add(self, argv: Sequence[str]) -> str:
        """Add ``argv``'s program and what its arguments make it run; returns the
        program's path (as found in PATH).

        Raises what :meth:`Builder.add_program` raises, ScriptNotFoundError,
        InterpreterError (an interpreter that cannot list a script's modules).
        """
        if not argv:
            raise EmptyCommandError()
        root = find_program(argv[0], self._env.get("PATH"), self._cwd)
        runner = self._builder.add_program(root, needer=None)
        if self._builder.is_script(root):
            self._script(root, runner, 0)
        else:
            self._arguments(root, runner, argv[1:], 0)
        return root

    def _arguments(self, root: str, runner: str, args: Sequence[str], depth: int) -> None:
        """Add what the program ``root`` (an ELF file run as ``runner``) runs
        given ``args``, if it is an interpreter."""
        kind = interpreter_kind(root, runner)
        if kind == "python":
            self._python(root, runner, args)
        elif kind == "perl":
            self._perl(root, runner, parse_perl(args))
        elif kind == "shell":
            self._shell(root, runner, args, depth)

    # --- Python ------------------------------------------------------------------

    def _python(self, root: str, runner: str, args: Sequence[str]) -> None:
        command = parse_python(args)
        options = command.options
        path0 = None if command.safe_path else self._cwd
        if command.kind == "script":
            path = self._script_path(root, command.value)
            real = self._builder.add_path(path, runner)
            self._builder.add_python(runner, PythonRun.script(path, options), real)
        elif command.kind == "module":
            run = PythonRun("module", command.value, path0, options, f"-m {command.value}")
            self._builder.add_python(runner, run, runner)
        elif command.kind == "code":
            with tempfile.TemporaryDirectory(prefix="beolaunch-code-") as tmp:
                path = os.path.join(tmp, "code.py")
                with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                    f.write(command.value)
                run = PythonRun("script", path, path0, options, "-c CODE")
                self._builder.add_python(runner, run, runner, hidden=tmp)
        elif options:  # -S, -I...: another startup than the plain interpreter's
            self._builder.add_python(runner, PythonRun(options=options), runner)

    # --- perl --------------------------------------------------------------------

    def _perl(self, root: str, runner: str, command: PerlCommand, script: str = "") -> None:
        """``script``: a #! script already added (its switches are in ``command``)."""
        texts: list[tuple[str, str]] = []
        bin_dirs = (self._cwd, self._cwd)  # FindBin's answer for -e
        if command.script is not None and not script:
            script = self._script_path(root, perl_script(command, self._env, self._cwd))
            self._builder.add_path(script, runner)
        if script:
            texts.append((self._read(script), os.path.realpath(script)))
            where = os.path.dirname(os.path.abspath(script))
            bin_dirs = (os.path.realpath(where), os.path.dirname(os.path.realpath(script)))
        elif command.code:
            texts.append(("\n".join(command.code), runner))
        inc = self._inc.get(runner)
        if inc is None:
            inc = self._inc[runner] = perl_inc(root, env=self._env, cwd=self._cwd)
        dirs = [os.path.normpath(os.path.join(self._cwd, d)) for d in command.include_dirs]
        found = perl_files(
            [*dirs, *inc],
            texts,
            modules=[(m, runner) for m in command.modules],
            files=[(f, runner) for f in command.files],
            cwd=self._cwd,
            bin_dirs=bin_dirs,
        )
        for file in found:
            self._builder.add_path(file.path, os.path.realpath(file.needer))
            if file.library:
                self._builder.add_include(file.path)

    # --- shells ------------------------------------------------------------------

    def _shell(self, root: str, runner: str, args: Sequence[str], depth: int) -> None:
        command = parse_shell(args)
        if command.script is not None:
            path = self._script_path(root, command.script)
            real = self._builder.add_path(path, runner)
            if real not in self._scanned:
                self._scanned.add(real)
                self._shell_text(self._read(path), real, depth)
        elif command.code is not None:
            self._shell_text(command.code, runner, depth)

    def _shell_text(self, text: str, needer: str, depth: int) -> None:
        words = command_words(text)
        for call in words.calls:
            self._command(call, needer, depth)
        for name in words.sourced:
            path = self._sourced(name)
            if path is None:
                continue
            real = self._builder.add_path(path, needer)
            if depth < MAX_SCRIPT_DEPTH and real not in self._scanned:
                self._scanned.add(real)
                self._shell_text(self._read(path), real, depth + 1)

    def _command(self, call: Sequence[str], needer: str, depth: int) -> None:
        """Add the program ``call[0]`` names, if PATH has it, and, above the depth
        limit, what a script or an interpreter's arguments run (``python3 x.py``
        in a shell script). A word that is not found, a program that cannot be
        resolved, a script argument not found (relative to another directory at
        run time, or an expansion) are passed over."""
        try:
            found = find_program(call[0], self._env.get("PATH"), self._cwd)
            runner = self._builder.add_program(found, needer, optional=True)
            if depth >= MAX_SCRIPT_DEPTH:
                return
            if self._builder.is_script(found):
                self._script(found, runner, depth + 1)
            else:
                self._arguments(found, runner, call[1:], depth + 1)
        except ClosureError:
            return

    def _sourced(self, name: str) -> str | None:
        """The file ``. NAME`` reads: a name with '/' from the working directory,
        else the first in PATH, else (bash) the working directory's."""
        candidates = [os.path.join(self._cwd, name)]
        if "/" not in name:
            dirs = (self._env.get("PATH") or "").split(":")
            candidates[:0] = [os.path.join(self._cwd, d or ".", name) for d in dirs]
        for candidate in candidates:
            if os.path.isfile(candidate):
                return os.path.normpath(candidate)
        return None

    # --- scripts run by their #! line ---------------------------------------------

    def _script(self, path: str, runner: str, depth: int) -> None:
        """Analyse the #! script ``path`` (already added) that ``runner`` runs."""
        real = os.path.realpath(path)
        if real in self._scanned:
            return
        self._scanned.add(real)
        kind = interpreter_kind(runner)
        if kind == "shell":
            self._shell_text(self._read(path), real, depth)
        elif kind == "perl":  # perl reads switches on its #! line too: -w -I lib -MFoo
            shebang = read_shebang(self._read(path, SHEBANG_LIMIT).encode("utf-8", "replace"))
            switches = (shebang.argument or "").split() if shebang else []
            self._perl(runner, runner, parse_perl(switches), script=path)

    # --- files -------------------------------------------------------------------

    def _script_path(self, interpreter: str, name: str) -> str:
        path = os.path.normpath(os.path.join(self._cwd, name))
        if not os.path.isfile(path):
            raise ScriptNotFoundError(interpreter, path, "not a file")
        if not os.access(path, os.R_OK):
            raise ScriptNotFoundError(interpreter, path, "not readable")
        return path

    @staticmethod
    def _read(path: str, limit: int = MAX_SOURCE_BYTES) -> str:
        """The text of a script (its first ``limit`` bytes); "" if it cannot be
        read (a script given on the command line was checked before)."""
        try:
            with open(path, "rb") as f:
                return f.read(limit).decode("utf-8", "replace")
        except OSError:
            return ""
