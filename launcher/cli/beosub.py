"""``beosub``: submit a program to run on the cluster with its exact files.

Submission (closure, store snapshot, scheduler) is built by the execution
issue; until then the command exists so the console script is installed and
its subcommands appear here as they are built.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from launcher.cli.entry import run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Submit jobs to run with the exact executable and library versions they had."""


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beosub")
