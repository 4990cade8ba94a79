"""A perl command line, read as ``perl.c`` (``S_parse_body``, ``moreswitches``) reads it.

Switches come first and may be clustered (``-wle CODE``). ``-e``/``-E`` (code,
may repeat), ``-I`` (a directory) and ``-M``/``-m`` (a module, with perl's
``=args`` or `` qw(...)``) take the rest of their word or the next one; ``-x``,
``-i``, ``-F``, ``-V``, ``-D`` and ``-d`` the rest of their word only; ``-0``,
``-l`` and ``-C`` their digits (and ``-C``'s letters). The first word that is
not a switch (or the word after ``--``) is the script, unless code was given;
``-`` is stdin.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cachefs.argwalk import LeadingOptions

_C_FLAGS = re.compile(r"[0-9IOESioDALa]*")
_OCTAL = re.compile(r"[0-7]*")
_ZERO = re.compile(r"x[0-9A-Fa-f]+|[0-7]*")
_MODULE = re.compile(r"-?([A-Za-z_]\w*(?:::\w+)*)")


@dataclass(frozen=True)
class PerlCommand:
    """What ``perl ARGS`` runs: ``script`` (as given; None with code or stdin),
    ``code`` (each ``-e``/``-E``), ``modules`` named by -M/-m (and -d:Name, as
    Devel::Name), ``include_dirs`` (-I, as given), ``files`` perl requires by
    itself (perl5db.pl for -d), ``search_path`` (-S: the script is looked up
    in PATH)."""

    script: str | None
    code: tuple[str, ...]
    modules: tuple[str, ...]
    include_dirs: tuple[str, ...]
    files: tuple[str, ...]
    search_path: bool


def module_of(spec: str) -> str | None:
    """The module a -M/-m argument loads: ``POSIX=strftime`` and ``POSIX qw(x)``
    are POSIX, ``-strict`` (perl's ``no strict``) is strict."""
    found = _MODULE.match(spec.strip())
    return found.group(1) if found else None


def parse_perl(args: Sequence[str]) -> PerlCommand:
    """Read ``args`` (after perl's name). Never raises: what perl would refuse is
    read as far as it goes."""
    code: list[str] = []
    modules: list[str] = []
    dirs: list[str] = []
    files: list[str] = []
    search = False
    words = LeadingOptions(args, lambda arg: arg != "-" and arg.startswith("-"))
    for arg in words:
        j = 1
        while j < len(arg):
            letter, rest = arg[j], arg[j + 1 :]
            if letter in "eEIMm":
                if not rest:
                    rest = words.value() or ""
                if letter in "eE":
                    code.append(rest)
                elif letter == "I":
                    dirs.append(rest)
                elif (name := module_of(rest)) is not None:
                    modules.append(name)
                break
            if letter == "d":
                name = rest.lstrip("t")
                if name.startswith(":") and module_of(name[1:]):
                    modules.append(f"Devel::{module_of(name[1:])}")
                else:
                    files.append("perl5db.pl")
                break
            if letter in "xiFVD":
                break
            if letter in "0lC":
                pattern = {"0": _ZERO, "l": _OCTAL, "C": _C_FLAGS}[letter]
                found = pattern.match(rest)
                j += 1 + (found.end() if found else 0)
                continue
            if letter == "S":
                search = True
            j += 1
    operands = words.operands()
    script = None
    if not code and operands and operands[0] != "-":
        script = operands[0]
    return PerlCommand(script, tuple(code), tuple(modules), tuple(dirs), tuple(files), search)
