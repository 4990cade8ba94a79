"""The one place console scripts turn errors into messages and exit codes.

``prog: what went wrong`` on stderr and the error's exit code for a
BeolaunchError or a BootsvcError (1 for a CachefsError); usage errors as click
prints them (exit 2); quiet on a closed pipe; 128+SIGINT on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

import click

from bootsvc.errors import BootsvcError
from cachefs.errors import CachefsError
from launcher.errors import BeolaunchError


def run(command: click.Command, argv: Sequence[str] | None, prog: str) -> int:
    """Run ``command`` on ``argv`` (default: sys.argv[1:]); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Without standalone mode click returns a command's Exit code instead
        # of exiting: that is beosub's exit status (the worst task's).
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except (BeolaunchError, BootsvcError) as exc:
        click.echo(f"{prog}: {exc}", err=True)
        return exc.exit_code
    except CachefsError as exc:
        click.echo(f"{prog}: {exc}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo(f"{prog}: interrupted", err=True)
        return 128 + signal.SIGINT
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:
        # Reader went away (e.g. `beostat ps | head`): say nothing, and keep
        # Python from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return result if isinstance(result, int) else 0
