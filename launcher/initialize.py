"""``beoctl init``: make a state dir, its config, the cluster secret and the database.

Idempotent: a second run with the same arguments changes nothing and reports
so. Files are written to a temporary name and renamed, so an interrupted init
never leaves a half-written config or secret.
"""

from __future__ import annotations

import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy.engine import make_url

from cachefs.atomicfile import write_atomic
from launcher import config as cfg
from launcher.errors import ConfigError, ConfigMissingError, InitConflictError
from launcher.state import migrate
from launcher.state.db import make_engine, protect_sqlite

SECRET_BYTES = 32


@dataclass
class InitResult:
    """What init did: ``created`` lists each thing made, empty when nothing changed."""

    config: cfg.Config
    created: list[str] = field(default_factory=list)


#: Makes the tables a new config gets on top of the defaults (see initialize).
Tables = Callable[[], Mapping[str, Mapping[str, Any]]]


def initialize(
    state_dir: Path, database_url: str | None = None, *, tables: Tables | None = None
) -> InitResult:
    """Create or confirm the state dir at ``state_dir``.

    ``tables`` is called only when a new config is written: each table it
    returns is merged key by key into the default document (``services.NAME``
    tables over the defaults, others such as ``cluster`` added), and the result
    is validated before it is written. An existing config is never rewritten.

    Raises InitConflictError if an existing config disagrees with the arguments,
    ConfigError if the existing config is bad, StateError if the database is at
    a revision this code does not know.
    """
    state_dir = state_dir.absolute()
    config_path = state_dir / cfg.CONFIG_NAME
    created: list[str] = []
    if not state_dir.is_dir():
        state_dir.mkdir(mode=0o755, parents=True)
        created.append(f"state dir {state_dir}")
    try:
        config = cfg.load(str(config_path))
    except ConfigMissingError:
        config, doc = _new_config(config_path, state_dir, database_url, tables)
        write_atomic(config_path, tomli_w.dumps(doc), mode=0o644)
        created.append(f"config {config_path}")
    else:
        if database_url is not None and database_url != config.database_url:
            raise InitConflictError(
                f"{config_path} already uses database {config.database_url!r}, not "
                f"{database_url!r}; edit state.database there or init another state dir"
            )
    created += _ensure_secret(config.secret_file)
    engine = make_engine(config.database_url)
    try:
        before = migrate.current_revision(engine)
        if before != migrate.head_revision():
            if before is not None:
                migrate.check(engine)  # refuses a newer or unknown revision
            migrate.upgrade(engine)
            created.append(
                f"database {_display_url(config.database_url)} at revision "
                f"{migrate.head_revision()}"
            )
        protect_sqlite(engine)
    finally:
        engine.dispose()
    return InitResult(config, created)


def _new_config(
    path: Path, state_dir: Path, database_url: str | None, tables: Tables | None
) -> tuple[cfg.Config, dict[str, Any]]:
    services = {
        name: cfg.ServiceAddress(
            cfg.OPTIONAL_SERVICES.get(name, "0.0.0.0"), cfg.DEFAULT_PORTS[name]
        )
        for name in cfg.SERVICES
    }
    config = cfg.Config(
        path=path,
        state_dir=state_dir,
        database_url=database_url or cfg.default_database_url(state_dir),
        secret_file=state_dir / "secret",
        services=services,
    )
    doc = cfg.render(config)
    for name, table in (tables() if tables else {}).items():
        _merge(doc.setdefault(name, {}), table)
    # Validate what we are about to write with the same code that reads it.
    return cfg.parse(path, doc), doc


def _merge(into: dict[str, Any], table: Mapping[str, Any]) -> None:
    for key, value in table.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _ensure_secret(path: Path) -> list[str]:
    try:
        st = path.stat()
    except FileNotFoundError:
        write_atomic(path, secrets.token_hex(SECRET_BYTES) + "\n", mode=0o600)
        return [f"cluster secret {path} (mode 0600)"]
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            path,
            None,
            f"cluster secret is mode {stat.S_IMODE(st.st_mode):04o}; "
            f"it must be readable by its owner only: chmod 600 {path}",
        )
    return []


def _display_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
