"""The Slurm hooks' socket client in C (``hookclient.c``, shipped with the package).

The prolog and epilog wrappers (:func:`launcher.slurm.conf.hook_script`) run
it instead of ``python -m launcher.slurm.hook`` when it was built: the same
request bytes, stderr and exit codes (the Python hook is the reference, a
test compares the two), without a Python start (~65 ms) on every node at
every Beolaunch job's start and end. It reads no config: the agent socket
pattern and ``prolog_timeout`` are resolved when the hooks are written and
passed on its command line (:class:`launcher.slurm.conf.HookClient`).

Built with the system ``cc`` when the hooks are written (``beoctl cluster up
--slurm``, ``beoctl slurm config --write-hooks``); without ``cc`` nothing is
built and the wrappers run the Python hook.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from launcher.errors import HookClientBuildError

SOURCE = Path(__file__).with_name("hookclient.c")
#: The binary's name in the hooks dir.
NAME = "hookclient"
CFLAGS = ("-std=c99", "-O2", "-Wall")


def build(directory: Path, compiler: str | None = None) -> Path | None:
    """Compile the client into ``directory/hookclient`` (0755); its path, or
    None when there is no C compiler (``cc`` on PATH, or ``compiler``).

    The binary is replaced atomically, and only when it changed, so a hook
    running at that moment is not disturbed. Raises HookClientBuildError when
    the compiler fails."""
    cc = compiler or shutil.which("cc")
    if cc is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / NAME
    tmp = directory / f".{NAME}.{os.getpid()}"
    try:
        done = subprocess.run(
            [cc, *CFLAGS, "-o", str(tmp), str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise HookClientBuildError(str(SOURCE), cc, done.stderr + done.stdout)
        tmp.chmod(0o755)
        try:
            same = target.read_bytes() == tmp.read_bytes()
        except FileNotFoundError:
            same = False
        if not same:
            os.replace(tmp, target)
    except OSError as exc:
        raise HookClientBuildError(str(SOURCE), cc, str(exc)) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target
