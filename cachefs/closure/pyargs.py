"""A CPython command line, read as ``Modules/main.c`` reads it (``Python/getopt.c``).

Options come first, possibly clustered (``-uOc CODE``); ``-c`` and ``-m`` take
the rest of their word or the next one and end the options, as do ``--``,
``-`` (stdin) and the first word that is not an option (the script). ``-W`` and
``-X`` take an argument, joined (``-Wd``) or not (``-W d``); every other letter
(-b -B -d -E -i -I -O -P -q -s -S -u -v -x...) none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# Options that change what starts and where imports are found (-I is -E -s -P;
# -O changes the .pyc names): the probe is run with them too.
_PROBE_FLAGS = frozenset("EsSIPO")
_LONG_WITH_ARGUMENT = frozenset({"--check-hash-based-pycs"})


@dataclass(frozen=True)
class PythonCommand:
    """What ``python ARGS`` runs: ``kind`` ``"script"`` (``value`` the path as
    given), ``"module"`` (``-m``, ``value`` the name), ``"code"`` (``-c``,
    ``value`` the code) or ``""`` (stdin or an interactive prompt); ``options``:
    the ones the probe needs (:data:`_PROBE_FLAGS`, and every ``-X``)."""

    kind: Literal["", "script", "module", "code"]
    value: str
    options: tuple[str, ...]

    @property
    def safe_path(self) -> bool:
        """True if ``sys.path[0]`` is not set (-I, -P)."""
        return "-I" in self.options or "-P" in self.options


def parse_python(args: Sequence[str]) -> PythonCommand:
    """Read ``args`` (after the interpreter's name). Never raises: a command line
    CPython would refuse is read as far as it goes (the job then fails as it would
    here)."""
    options: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            if i + 1 < len(args):
                return PythonCommand("script", args[i + 1], tuple(options))
            break
        if arg == "-" or not arg.startswith("-"):
            kind: Literal["", "script"] = "" if arg == "-" else "script"
            return PythonCommand(kind, "" if arg == "-" else arg, tuple(options))
        if arg.startswith("--"):
            if arg in _LONG_WITH_ARGUMENT:
                i += 1
            i += 1
            continue
        j = 1
        while j < len(arg):
            letter, rest = arg[j], arg[j + 1 :]
            if letter in "cm":
                if not rest and i + 1 >= len(args):
                    return PythonCommand("", "", tuple(options))  # "Argument expected"
                value = rest or args[i + 1]
                return PythonCommand("code" if letter == "c" else "module", value, tuple(options))
            if letter in "WX":
                value = rest
                if not rest:
                    i += 1
                    value = args[i] if i < len(args) else ""
                if letter == "X" and value:
                    options += ["-X", value]
                break
            if letter in _PROBE_FLAGS:
                options.append(f"-{letter}")
            j += 1
        i += 1
    return PythonCommand("", "", tuple(options))
