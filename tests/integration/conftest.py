"""Fixtures the integration tests share."""

from __future__ import annotations

import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import vcluster as vc


@pytest.fixture
def user() -> Iterator[pwd.struct_passwd]:
    """A new user without a home (files are opened as it), removed afterwards."""
    name = f"beot{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True)


@pytest.fixture
def top(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A new 0755 dir under /tmp, removed afterwards: other users reach it
    (pytest's ``tmp_path`` is 0700)."""
    made = Path(tempfile.mkdtemp(prefix=f"{vc.module_prefix(request.module.__name__)}-"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made)


@pytest.fixture(scope="module")
def vcluster(request: pytest.FixtureRequest) -> Iterator[vc.Clusters]:
    """The module's virtual clusters: ``vcluster(nodes, slurm=..., settings=...)``
    brings one up, ``vcluster.e2e(nodes, ...)`` one with a user who submits,
    ``vcluster.user()`` makes a user, ``vcluster.after_down(fn)`` frees
    something else. Names start with the module's (``vc.module_prefix``). At
    the module's end every cluster is brought down (``beoctl cluster down``),
    even one whose set-up failed halfway, and all of it is removed.

    Module scope: one cluster serves the module's tests (bringing one up takes
    tens of seconds, with Slurm about a minute)."""
    with vc.Clusters(vc.module_prefix(request.module.__name__)) as clusters:
        yield clusters
