"""Errors raised by the launcher package.

Every error the CLI can show derives from :class:`BeolaunchError`; the console
scripts turn it into ``prog: message`` and an exit code in one place
(:mod:`launcher.cli.entry`).  Subclasses carry the bad input as attributes so
callers can act on it without parsing messages.
"""

from __future__ import annotations

from pathlib import Path


class BeolaunchError(Exception):
    """Base of every error the launcher reports to a user."""

    exit_code = 1


class ConfigError(BeolaunchError):
    """A configuration file is unreadable or holds a bad value."""

    def __init__(self, path: Path, key: str | None, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: key '{key}'" if key else str(path)
        super().__init__(f"{where}: {problem}")


class ConfigMissingError(BeolaunchError):
    """No configuration file where one was looked for."""

    def __init__(self, path: Path, how_found: str) -> None:
        self.path = path
        self.how_found = how_found
        super().__init__(
            f"no configuration at {path} ({how_found}): run 'beoctl init' "
            "(or 'beoctl init --state-dir DIR' and set BEOLAUNCH_CONFIG=DIR/config.toml)"
        )


class InitConflictError(BeolaunchError):
    """``beoctl init`` was asked for something that contradicts what exists."""


class StateError(BeolaunchError):
    """The state database cannot be used as asked."""


class SchemaMismatchError(StateError):
    """The database's schema revision is not the one this code expects."""

    def __init__(self, url: str, current: str | None, head: str, advice: str) -> None:
        self.url = url
        self.current = current
        self.head = head
        super().__init__(
            f"database {url} is at schema revision {current or '(none)'}, "
            f"this Beolaunch expects {head}: {advice}"
        )


class NotFoundError(BeolaunchError):
    """A job, node, manifest or object named by the user does not exist."""

    exit_code = 2
