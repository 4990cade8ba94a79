"""The Perl modules a program loads, found statically in the target perl's @INC.

Perl code is not parsed: its text is scanned for ``use``/``no``/``require``
of a bareword ``Module::Name``, ``require``/``do`` of a quoted file name,
``use VERSION`` (5.10 loads feature.pm, 5.12 strict.pm, 5.36 warnings.pm),
``use parent``/``use base`` and ``use if`` of literal names, and ``use lib``
of literal directories (``$FindBin::Bin``/``RealBin`` taken as the script's
directory). POD, ``#`` comment lines and what follows ``__END__``/``__DATA__``
are skipped. Each module is looked up in @INC as perl would (the first
directory holding ``Module/Name.pm``), scanned in turn, and its ``auto/``
directory taken as DynaLoader/XSLoader would look for it: the files directly
in ``auto/Module/Name/`` (``Name.so``, ``.bs``, AutoLoader's ``.al``), first
next to the module, then along @INC. A module not found is skipped: the job
fails or the master fallback serves it, as for anything static analysis misses
(a name computed at run time, a string ``eval``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cachefs.errors import InterpreterError

#: Perl source read per file (bytes): a module larger than this is scanned in part.
MAX_SOURCE_BYTES = 8 << 20

# Not preceded by what makes the word a sigil'd name, a method or a package part.
_START = r"(?<![\w$@%&:>-])"
_LOAD = re.compile(_START + r"(?:use|no|require)\s+([A-Za-z_]\w*(?:::\w+)*)(?![\w:.])")
_VERSION = re.compile(_START + r"use\s+(v?\d[\d._]*)")
_FILE = re.compile(_START + r"(?:require|do)\s+(['\"])([^'\"$@\n]+\.p[lm])\1")
_PRAGMA = re.compile(_START + r"use\s+(lib|parent|base|if)\b([^;]*)")
_QW = re.compile(r"qw\s*(?:\((.*?)\)|\[(.*?)\]|\{(.*?)\}|<(.*?)>|([^\w\s])(.*?)\5)", re.S)
_DOUBLE = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_STRINGS = re.compile(r"\s*'([^']*)'(?:\s*\.\s*'[^']*')*\s*")
_BAREWORD = re.compile(r"\s*(-?[A-Za-z_]\w*(?:::\w+)*)\s*")
_NAME = re.compile(r"[A-Za-z_]\w*(?:::\w+)*")
_BIN = re.compile(r"\$\{?(?:FindBin::)?(Real)?Bin\b\}?")
_UNKNOWN = "\0"
# Modules that load another by a name made at run time, and what that is on Linux.
_RUNTIME_LOADS: dict[str, tuple[str, ...]] = {"File::Spec": ("File::Spec::Unix",)}
# ``use v5.N`` loads these from 5.N on (the feature bundle; strict from 5.12, warnings 5.36).
_VERSION_PRAGMAS = (("feature", 10), ("strict", 12), ("warnings", 35))


@dataclass(frozen=True)
class PerlFile:
    """A file perl opens: ``path`` as perl names it (an @INC directory joined with
    the module's file), who loads it, and whether it is an XS object (dlopen'ed)."""

    path: str
    needer: str
    library: bool = False


@dataclass
class PerlRefs:
    """What one text loads: module names, files named by ``require "x.pl"``, and
    ``use lib`` directories (as written; relative ones are from the working
    directory)."""

    modules: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    lib_dirs: list[str] = field(default_factory=list)


def perl_inc(perl: str, *, env: Mapping[str, str], cwd: str) -> tuple[str, ...]:
    """@INC of ``perl`` run in ``env`` (PERL5LIB counts), absolute.

    Raises InterpreterError if perl cannot be run or fails.
    """
    try:
        done = subprocess.run(
            [perl, "-e", 'print join "\\n", @INC'],
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InterpreterError(perl, "@INC", str(exc)) from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise InterpreterError(perl, "@INC", f"exit status {done.returncode}: {' '.join(tail)}")
    lines = done.stdout.decode(errors="surrogateescape").splitlines()
    return tuple(os.path.normpath(os.path.join(cwd, d)) for d in lines if d)


def module_file(name: str) -> str:
    """``File::Temp`` -> ``File/Temp.pm``."""
    return name.replace("::", "/") + ".pm"


def scan_perl(text: str, bin_dirs: tuple[str, str] | None = None) -> PerlRefs:
    """What ``text`` loads; ``bin_dirs``: FindBin's ``$Bin`` and ``$RealBin``."""
    code = _code(text)
    refs = PerlRefs()
    refs.modules.extend(m.group(1) for m in _LOAD.finditer(code))
    refs.files.extend(m.group(2) for m in _FILE.finditer(code))
    for found in _VERSION.finditer(code):
        minor = _minor(found.group(1))
        refs.modules += [name for name, since in _VERSION_PRAGMAS if minor >= since]
    for found in _PRAGMA.finditer(code):
        pragma, items = found.group(1), _items(found.group(2), bin_dirs)
        if pragma == "lib":
            refs.lib_dirs += [i for i in items if i != _UNKNOWN]
        elif pragma == "base" or (pragma == "parent" and "-norequire" not in items):
            refs.modules += [i for i in items if _NAME.fullmatch(i)]
        elif pragma == "if" and len(items) > 1 and _NAME.fullmatch(items[1]):
            refs.modules.append(items[1])
    return refs


def perl_files(
    inc: Sequence[str],
    texts: Sequence[tuple[str, str]],
    *,
    modules: Sequence[tuple[str, str]] = (),
    files: Sequence[tuple[str, str]] = (),
    cwd: str,
    bin_dirs: tuple[str, str] | None = None,
) -> list[PerlFile]:
    """The files perl opens for ``texts`` (``(code, who runs it)``), the
    ``modules`` and ``files`` named on its command line (``(name, needer)``),
    with ``inc`` as @INC (``use lib`` directories found on the way go first)."""
    dirs = list(inc)
    queue: deque[tuple[str, str]] = deque()

    def take(refs: PerlRefs, needer: str) -> None:
        for d in refs.lib_dirs:
            where = os.path.normpath(os.path.join(cwd, d))
            if where not in dirs:
                dirs.insert(0, where)
        for name in refs.modules:
            queue.append((module_file(name), needer))
            queue.extend((module_file(m), needer) for m in _RUNTIME_LOADS.get(name, ()))
        queue.extend((f, needer) for f in refs.files)

    for text, needer in texts:
        take(scan_perl(text, bin_dirs), needer)
    for name, needer in modules:
        take(PerlRefs(modules=[name]), needer)
    queue.extend(files)
    found: list[PerlFile] = []
    done: set[str] = set()
    while queue:
        rel, needer = queue.popleft()
        if rel in done:
            continue
        done.add(rel)
        located = _locate(rel, dirs, cwd)
        if located is None:
            continue
        base, path = located
        found.append(PerlFile(path, needer))
        source = _read(path)
        if source is not None:
            take(scan_perl(source, bin_dirs), path)
        if base is not None and rel.endswith(".pm"):
            found.extend(_auto(rel, [base, *dirs], path))
    return found


def _locate(rel: str, dirs: Sequence[str], cwd: str) -> tuple[str | None, str] | None:
    """(the @INC directory, the file) perl opens for ``rel``; a path that is
    absolute or starts with ./ or ../ is not searched (pp_require)."""
    if os.path.isabs(rel) or rel.startswith(("./", "../")):
        path = os.path.normpath(os.path.join(cwd, rel))
        return (None, path) if os.path.isfile(path) else None
    for d in dirs:
        path = os.path.join(d, rel)
        if os.path.isfile(path):
            return d, path
    return None


def _auto(rel: str, dirs: Sequence[str], module: str) -> list[PerlFile]:
    """The files of ``auto/Module/Name/`` (not below it: those are other modules')."""
    stem = rel[: -len(".pm")]
    shared = os.path.basename(stem) + ".so"
    found: list[PerlFile] = []
    for d in dirs:
        try:
            with os.scandir(os.path.join(d, "auto", stem)) as listing:
                entries = sorted((e for e in listing if e.is_file()), key=lambda e: e.name)
        except OSError:
            continue
        found += [PerlFile(e.path, module, e.name.endswith(".so")) for e in entries]
        if any(e.name == shared for e in entries):
            break
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_SOURCE_BYTES).decode("utf-8", "replace")
    except OSError:
        return None


def _code(text: str) -> str:
    """``text`` without POD, comment lines and what follows __END__/__DATA__."""
    kept: list[str] = []
    pod = False
    for line in text.splitlines():
        if pod:
            pod = not line.startswith("=cut")
            continue
        if line[:1] == "=" and line[1:2].isalpha():
            pod = True
            continue
        if line.startswith(("__END__", "__DATA__")):
            break
        if not line.lstrip().startswith("#"):
            kept.append(line)
    return "\n".join(kept)


def _minor(version: str) -> int:
    """5.36 of ``v5.36``, ``5.36.0``, ``5.036``, ``5.036_001``; 0 if not Perl 5."""
    parts = version.lstrip("v").replace("_", "").split(".")
    if parts[0] != "5" or len(parts) < 2 or not parts[1].isdigit():
        return 0
    if version.startswith("v") or len(parts) > 2:
        return int(parts[1])
    return int(parts[1][:3].ljust(3, "0"))


def _items(text: str, bin_dirs: tuple[str, str] | None) -> list[str]:
    """The literal items of a Perl list (``qw(...)``, quoted strings joined with
    ``.``, barewords); an item that is not literal is :data:`_UNKNOWN`."""

    def double(found: re.Match[str]) -> str:
        inner = found.group(1)
        if bin_dirs is not None:
            inner = _BIN.sub(lambda m: bin_dirs[1] if m.group(1) else bin_dirs[0], inner)
        return _UNKNOWN if "$" in inner or "@" in inner or "'" in inner else f"'{inner}'"

    def words(found: re.Match[str]) -> str:
        if found.group(5) is not None:  # qw!...!: the same character on both sides
            inner = found.group(6)
        else:
            inner = next(g for g in found.groups()[:4] if g is not None)
        return ",".join(f"'{w}'" for w in inner.split() if "'" not in w)

    text = _QW.sub(words, text)
    text = _DOUBLE.sub(double, text)
    if bin_dirs is not None and "'" not in "".join(bin_dirs):
        text = _BIN.sub(lambda m: f"'{bin_dirs[1] if m.group(1) else bin_dirs[0]}'", text)
    items: list[str] = []
    for piece in re.split(r",|=>", text):
        if not piece.strip():
            continue
        if _STRINGS.fullmatch(piece):
            items.append("".join(re.findall(r"'([^']*)'", piece)))
        elif (bare := _BAREWORD.fullmatch(piece)) is not None:
            items.append(bare.group(1))
        else:
            items.append(_UNKNOWN)
    return items
