"""``beoctl``: the administrator's command (init, database, nodes)."""

from __future__ import annotations

from collections.abc import Sequence

import click

from launcher.cli.beoctl import db, init, node
from launcher.cli.context import config_option, make_context
from launcher.cli.entry import run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.pass_context
def cli(ctx: click.Context, config_flag: str | None) -> None:
    """Administer a Beolaunch cluster: state, database, nodes."""
    make_context(ctx, config_flag)


cli.add_command(init.init)
cli.add_command(db.db)
cli.add_command(node.node)


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beoctl")
