"""Batch output file names: Slurm-style ``%`` patterns.

``%j`` job id, ``%n`` node name (``%N`` too), ``%t`` task number, ``%u`` user
name, ``%x`` job name, ``%%`` a percent sign. A number between ``%`` and ``j``
or ``t`` zero-pads it, as in Slurm (``%4j`` -> ``0042``). Note: in Slurm ``%n``
is the node's index within the job and ``%N`` its name; here both are the name,
which is what a file per node wants on a cluster whose nodes have names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from launcher.errors import OutputPatternError

_SEQUENCE = re.compile(r"%(\d*)(.?)")
_KNOWN = frozenset("jJntNux%")
#: Default output file of a batch job, in its working directory (Slurm: slurm-%j.out).
DEFAULT_OUTPUT = "beolaunch-%j.out"


@dataclass(frozen=True)
class Fields:
    """What a pattern is expanded with."""

    job: int
    node: str
    task: int
    user: str
    name: str


def check(pattern: str) -> None:
    """Raise OutputPatternError for an empty pattern, a NUL, or an unknown ``%`` sequence."""
    if not pattern:
        raise OutputPatternError(pattern, "it is empty")
    if "\0" in pattern:
        raise OutputPatternError(pattern, "it holds a NUL byte")
    for match in _SEQUENCE.finditer(pattern):
        letter = match.group(2)
        if letter not in _KNOWN or not letter:
            raise OutputPatternError(pattern, f"unknown sequence %{match.group(1)}{letter}")


def expand(pattern: str, fields: Fields) -> str:
    """The file name ``pattern`` gives for ``fields`` (checked first: OutputPatternError)."""
    check(pattern)

    def one(match: re.Match[str]) -> str:
        width, letter = match.group(1), match.group(2)
        if letter in "jJ":
            return str(fields.job).zfill(int(width or 0))
        if letter == "t":
            return str(fields.task).zfill(int(width or 0))
        if letter in "nN":
            return fields.node
        if letter == "u":
            return fields.user
        if letter == "x":
            return fields.name
        return "%"

    return _SEQUENCE.sub(one, pattern)
