"""Two users who do not trust each other on one real cluster (issue 12).

alice runs jobs with a 0600 file of hers; mallory, an ordinary user on the
same master and nodes, tries what issue 12's probe did: read alice's file
from the store, from a node cache, from a kept environment root, by naming
its sha256 in a forged manifest, through ``beoacct``, or from the state
database. Each must fail, while alice keeps full use of her own file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.config import load
from tests.integration import vcluster as vc
from tests.integration.vcluster import E2E

pytestmark = vc.needs_root_and(
    *vc.CLUSTER, "useradd", "runuser", reason="needs root, iproute2, util-linux and useradd"
)

BIN = vc.BIN
SECRET = b"alice's secret: 7f3a9c\n"


@dataclass(frozen=True)
class Pair:
    alice: E2E
    mallory: E2E
    secret: Path  # alice's 0600 file, in her 0700 home
    sha256: str


def _as(e: E2E, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", e.user, "--", *argv], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def pair(vcluster: vc.Clusters) -> Pair:
    accounts = [vcluster.user(), vcluster.user()]
    for account in accounts:
        Path(account.pw_dir).chmod(0o700)
    alice_home = Path(accounts[0].pw_dir)
    secret = alice_home / "secret.txt"
    secret.write_bytes(SECRET)
    os.chown(secret, accounts[0].pw_uid, accounts[0].pw_uid)
    secret.chmod(0o600)
    c = vcluster(2)
    alice, mallory = (
        E2E(c.state, c.config, a.pw_name, a.pw_uid, Path(a.pw_dir), c.tag) for a in accounts
    )
    return Pair(alice, mallory, secret, hashlib.sha256(SECRET).hexdigest())


@pytest.fixture(scope="module")
def ran(pair: Pair) -> int:
    """alice's job reading her own 0600 file on both nodes (item 9); its id."""
    done = pair.alice.beosub(
        "-N", "2", "--include", str(pair.secret), "--", "/bin/cat", str(pair.secret)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == SECRET.decode() * 2, done.stdout
    rows = pair.alice.json("beostat", "jobs", "--all")
    return int(max(r["job"] for r in rows))


def test_alice_reads_her_own_0600_file_in_her_job(ran: int) -> None:
    assert ran > 0  # the fixture's job printed the file on both nodes


def test_mallory_cannot_read_it_from_the_store_or_a_node_cache(pair: Pair, ran: int) -> None:
    state = pair.alice.state
    copies = [state / "store" / "objects" / pair.sha256[:2] / pair.sha256]
    copies += sorted(state.glob(f"cluster/node*/cache/objects/{pair.sha256[:2]}/{pair.sha256}"))
    assert len(copies) == 3, copies  # the store and both nodes hold it
    for copy in copies:
        assert copy.read_bytes() == SECRET
        done = _as(pair.mallory, ["cat", str(copy)])
        assert done.returncode != 0 and SECRET.decode() not in done.stdout, copy


def test_mallory_cannot_reach_alices_kept_roots(pair: Pair, ran: int) -> None:
    roots = sorted(pair.alice.state.glob(f"cluster/node*/roots/u{pair.alice.uid}"))
    assert roots, "alice's roots dir on the nodes"
    for top in roots:
        for victim in [top, *top.iterdir()]:
            listed = _as(pair.mallory, ["ls", str(victim)])
            assert listed.returncode != 0, victim
        shown = next(top.glob(f"*/{str(pair.secret).lstrip('/')}"), None)
        if shown is not None:  # a kept root showing alice's file
            assert _as(pair.alice, ["cat", str(shown)]).stdout == SECRET.decode()
            assert _as(pair.mallory, ["cat", str(shown)]).returncode != 0


FORGE = """
import json, os, sys
from pathlib import Path
from launcher.master.client import BlockingClient
from launcher.errors import MasterError
sock, path, sha, size, how = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
entry = {"path": path, "kind": "file", "mode": 0o644, "size": size, "sha256": sha, "target": None}
doc = {"version": 1, "root": path, "owner": os.getuid(), "entries": [entry]}
client = BlockingClient(Path(sock))
try:
    if how == "jobs":
        client.submit(argv=["/bin/cat", path], env={}, cwd="/", nodes=1, tasks=1, manifest=doc)
    else:  # what beosub sends before sbatch on the Slurm path
        client.store_manifest(doc)
    print("ACCEPTED")
except MasterError as exc:
    print("REFUSED", exc)
"""


def test_naming_alices_sha256_in_a_forged_manifest_is_refused(pair: Pair, ran: int) -> None:
    sock = str(pair.alice.state / "run" / "master.sock")
    size = str(len(SECRET))
    decoy = pair.mallory.work / "decoy.txt"
    _as(pair.mallory, ["sh", "-c", f"head -c {size} /dev/zero > {decoy}"])
    for how in ("jobs", "manifests"):
        for path in (str(pair.secret), str(decoy), "/nonexistent"):
            done = _as(
                pair.mallory,
                [
                    *("env", f"PYTHONPATH={Path(__file__).parents[2]}", sys.executable, "-c"),
                    *(FORGE, sock, path, pair.sha256, size, how),
                ],
            )
            assert done.stdout.startswith("REFUSED"), (how, path, done.stdout, done.stderr)
    jobs = pair.alice.json("beostat", "jobs", "--all")
    assert all(r["uid"] != pair.mallory.uid for r in jobs), jobs


def test_beoacct_shows_mallory_nothing_of_alices(pair: Pair, ran: int) -> None:
    def acct(e: E2E, *args: str) -> subprocess.CompletedProcess[str]:
        return _as(e, ["env", f"BEOLAUNCH_CONFIG={e.config}", str(BIN / "beoacct"), *args])

    mine = acct(pair.alice, "jobs", "--path", str(pair.secret), "--json")
    assert mine.returncode == 0, mine.stderr
    assert {r["job_id"] for r in json.loads(mine.stdout)} == {ran}
    theirs = acct(pair.mallory, "jobs", "--path", str(pair.secret), "--json")
    assert theirs.returncode == 0 and json.loads(theirs.stdout) == [], theirs.stdout
    files = acct(pair.mallory, "files", str(ran))
    assert files.returncode != 0 and f"no job '{ran}' of yours" in files.stderr, files.stderr
    versions = acct(pair.mallory, "versions", str(pair.secret), "--json")
    assert json.loads(versions.stdout) == []
    assert acct(pair.mallory, "holders", pair.sha256, "--json").stdout.strip() == "[]"
    usage = acct(pair.mallory, "usage", "--json")
    assert json.loads(usage.stdout) == [], usage.stdout
    assert pair.sha256 in acct(pair.alice, "files", str(ran)).stdout


def test_the_state_database_is_roots_only(pair: Pair, ran: int) -> None:
    url = load(str(pair.alice.config)).database_url
    db = Path(url.removeprefix("sqlite:///"))
    assert db.stat().st_mode & 0o077 == 0
    assert _as(pair.mallory, ["cat", str(db)]).returncode != 0
    # A job's reason may name its owner's files: others do not see it.
    rows = json.loads(
        _as(
            pair.mallory,
            [
                *("env", f"BEOLAUNCH_CONFIG={pair.mallory.config}", str(BIN / "beostat")),
                *("jobs", "--all", "--json"),
            ],
        ).stdout
    )
    assert all(r["reason"] is None for r in rows if r["uid"] != pair.mallory.uid)
