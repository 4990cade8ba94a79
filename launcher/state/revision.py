"""Write a new Alembic revision from the difference between models and head.

Developer tool: ``python -m launcher.state.revision "message"``. It upgrades a
scratch SQLite database to the current head and autogenerates against it, so
no real database is touched.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from alembic import command

from launcher.state import migrate
from launcher.state.db import make_engine


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m launcher.state.revision MESSAGE\n")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        if any(migrate.migrations_dir().joinpath("versions").glob("*.py")):
            migrate.upgrade(engine)
        script = command.revision(
            migrate.alembic_config(engine), message=argv[0], autogenerate=True
        )
        engine.dispose()
    assert script is not None and not isinstance(script, list)
    init = migrate.migrations_dir() / "__init__.py"
    init.write_text(
        re.sub(r'^HEAD = ".*"$', f'HEAD = "{script.revision}"', init.read_text(), flags=re.M)
    )
    print(f"migrations.HEAD is now {script.revision}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
