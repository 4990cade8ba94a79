"""The fast form of ``beoctl --config CONFIG slurm prolog|epilog``, for the
wrappers slurmd runs (:func:`launcher.slurm.conf.hook_script`).

``python -m launcher.slurm.hook --config CONFIG slurm STAGE``: the same work
and exit codes as the beoctl commands (0 admitted or passed, 1 with
``beoctl: REASON`` on stderr), without importing click, SQLAlchemy or the rest
of beoctl (~1 s of a job's start).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from launcher.errors import BeolaunchError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    config: Path | None = None
    if len(args) >= 2 and args[0] == "--config":
        config = Path(args[1])
        args = args[2:]
    if len(args) != 2 or args[0] != "slurm" or args[1] not in ("prolog", "epilog"):
        print(
            "usage: python -m launcher.slurm.hook [--config FILE] slurm prolog|epilog",
            file=sys.stderr,
        )
        return 2
    try:
        if args[1] == "prolog":
            from launcher.slurm import prolog

            prolog.run(os.environ, config)
        else:
            from launcher.slurm import epilog

            epilog.run(os.environ, config)
    except BeolaunchError as exc:
        print(f"beoctl: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
