"""Fixtures the integration tests share."""

from __future__ import annotations

import pwd
import subprocess
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture
def user() -> Iterator[pwd.struct_passwd]:
    """A new user without a home (files are opened as it), removed afterwards."""
    name = f"beot{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True)
