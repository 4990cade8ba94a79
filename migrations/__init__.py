"""Alembic revisions of the state database.

HEAD is the newest revision, so commands can check a database's schema without
importing Alembic; ``python -m launcher.state.revision`` updates it, and
``tests/integration/state/test_migrations.py`` fails if it is stale.
"""

HEAD = "6c1a2e7f0b13"
