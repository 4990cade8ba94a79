"""What every command shares: the --config option and lazy access to config and state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
from sqlalchemy import Engine

from launcher import config as cfg
from launcher.state import migrate

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    """Holds the --config flag; reads the config and opens the database on first use."""

    config_flag: str | None
    _config: cfg.Config | None = None
    _engine: Engine | None = field(default=None, repr=False)

    def config(self) -> cfg.Config:
        if self._config is None:
            self._config = cfg.load(self.config_flag)
        return self._config

    def engine(self) -> Engine:
        """The state database, checked to be at this code's schema head."""
        if self._engine is None:
            self._engine = migrate.open_engine(self.config().database_url)
        return self._engine


def config_option(f: F) -> F:
    """The --config option every console script takes on its top-level group."""
    return click.option(
        "--config",
        "config_flag",
        metavar="FILE",
        envvar=None,
        help=f"Configuration file (default: ${cfg.CONFIG_ENV}, then {cfg.DEFAULT_CONFIG}).",
    )(f)


def make_context(ctx: click.Context, config_flag: str | None) -> None:
    ctx.obj = CliContext(config_flag)
    ctx.call_on_close(lambda: ctx.obj._engine.dispose() if ctx.obj._engine else None)


pass_cli = click.make_pass_decorator(CliContext)


def script_group(help_text: str) -> click.Group:
    """The top-level group of a console script that reads the config: --config, -h."""

    @click.group(help=help_text, context_settings={"help_option_names": ["-h", "--help"]})
    @config_option
    @click.pass_context
    def group(ctx: click.Context, config_flag: str | None) -> None:
        make_context(ctx, config_flag)

    return group
