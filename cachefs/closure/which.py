"""Finding a program the way execvp does."""

from __future__ import annotations

import os

from cachefs.errors import ProgramNotFoundError


def find_program(program: str, path_var: str | None, cwd: str) -> str:
    """The absolute path execvp would run for ``program``.

    A name with '/' is taken relative to ``cwd``; otherwise each ``PATH``
    directory in turn (an empty one is ``cwd``; no PATH at all means execvp's
    default "/bin:/usr/bin"). Raises ProgramNotFoundError.
    """
    if "/" in program:
        candidates = [os.path.normpath(os.path.join(cwd, program))]
        searched = [candidates[0]]
    else:
        dirs = (path_var if path_var is not None else "/bin:/usr/bin").split(":")
        candidates = [os.path.normpath(os.path.join(cwd, d or ".", program)) for d in dirs]
        searched = [os.path.normpath(os.path.join(cwd, d or ".")) for d in dirs]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ProgramNotFoundError(program, searched)
