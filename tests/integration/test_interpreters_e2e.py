"""End to end: interpreters given a script or code run on a real 2-node cluster.

``beosub python3 job.py`` and ``beosub sh -c '...'`` used to ship the
interpreter alone: the script, its imports and the commands the shell runs
were missing on the nodes. Submitted by an ordinary user, as test_e2e does,
with ``--strict`` (nothing fetched late from the master): the closure alone
must bring every file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration import test_e2e
from tests.integration import vcluster as vc
from tests.integration.vcluster import E2E

#: slow, and skipped without root, iproute2, util-linux and useradd, as test_e2e
pytestmark = test_e2e.pytestmark

NODES = 2


@pytest.fixture(scope="module")
def cluster(vcluster: vc.Clusters) -> E2E:
    return vcluster.e2e(NODES)


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)


def test_python_script_with_stdlib_extensions_and_a_local_module(cluster: E2E) -> None:
    _write(
        cluster.work / "job.py",
        "import json, sqlite3, ssl, sys\n"
        "import helper\n"
        "db = sqlite3.connect(':memory:')\n"
        "(n,) = db.execute('select 6 * 7').fetchone()\n"
        "print(json.dumps({'n': n, 'arg': sys.argv[1], 'greeting': helper.GREETING}),"
        " ssl.OPENSSL_VERSION.split()[0])\n",
    )
    _write(cluster.work / "helper.py", "GREETING = 'hello from helper'\n")
    done = cluster.beosub("--strict", "-N", str(NODES), "python3", "job.py", "argv1")
    assert done.returncode == 0, done.stderr
    expected = '{"n": 42, "arg": "argv1", "greeting": "hello from helper"} OpenSSL'
    assert done.stdout.splitlines() == [expected] * NODES, done.stdout + done.stderr


def test_shell_code_runs_the_commands_it_names(cluster: E2E) -> None:
    code = 'f=$(mktemp); date +%Y > "$f"; tr 0-9 a-j < "$f"; rm "$f"'
    done = cluster.beosub("--strict", "-N", str(NODES), "sh", "-c", code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == NODES and all(re.fullmatch(r"[a-j]{4}", line) for line in lines), (
        done.stdout + done.stderr
    )
