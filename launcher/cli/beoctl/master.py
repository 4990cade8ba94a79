"""``beoctl master``: run the master daemon."""

from __future__ import annotations

import asyncio
import logging

import click

from launcher.cli.context import CliContext, pass_cli
from launcher.master import daemon


@click.group()
def master() -> None:
    """The master daemon (control, objects, logs and the user socket)."""


@master.command()
@pass_cli
def serve(cli: CliContext) -> None:
    """Run the master in the foreground until SIGTERM or Ctrl-C; logs go to stderr."""
    logging.basicConfig(level=logging.INFO, format="beoctl master: %(message)s")
    # One access line per object a node fetches drowns everything else.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    config = cli.config()
    log = logging.getLogger("beolaunch.master")

    def ready() -> None:
        log.info(
            "serving: control %s, objects %s, logs %s (udp), users %s",
            config.service("control"),
            config.service("objects"),
            config.service("logs"),
            daemon.socket_path(config),
        )

    asyncio.run(daemon.serve(config, ready=ready))
    log.info("stopped")
