"""Per-job object capabilities: made only by the master's secret, for one manifest, for a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachefs.manifest import Entry, build
from cachefs.store import Store
from launcher.master.capability import CapabilityAuthorizer, issue, verify

SECRET = "s" * 64
M = "ab" * 32
NOW = 1_800_000_000.0


def test_a_capability_verifies_with_its_secret_only() -> None:
    cap = issue(SECRET, 42, M, ttl_s=60, now=NOW)
    found = verify(SECRET, cap, now=NOW)
    assert found is not None and (found.job, found.manifest) == (42, M)
    assert verify("t" * 64, cap, now=NOW) is None
    assert verify(SECRET, SECRET, now=NOW) is None  # the secret is no capability


@pytest.mark.parametrize("field", [1, 2, 3, 4])
def test_changing_any_field_breaks_it(field: int) -> None:
    parts = issue(SECRET, 42, M, ttl_s=60, now=NOW).split(".")
    parts[field] = {1: "43", 2: "cd" * 32, 3: str(int(NOW) + 10_000), 4: "0" * 64}[field]
    assert verify(SECRET, ".".join(parts), now=NOW) is None


def test_an_expired_capability_is_refused() -> None:
    cap = issue(SECRET, 42, M, ttl_s=60, now=NOW)
    assert verify(SECRET, cap, now=NOW + 59) is not None
    assert verify(SECRET, cap, now=NOW + 61) is None


@pytest.mark.parametrize("token", ["", "bjc1", "bjc1.x.y.z.w", "bjc1.1." + M + ".1.zz", "a.b"])
def test_malformed_tokens_are_refused(token: str) -> None:
    assert verify(SECRET, token, now=NOW) is None


def test_the_authorizer_grants_the_manifest_objects_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    mine, _ = store.ingest_bytes(b"in the job's manifest")
    other, _ = store.ingest_bytes(b"another user's secret")
    manifest = build("/p", [Entry("/p", "file", 0o755, 21, mine)], owner=1000)
    manifest_id, _ = store.ingest_bytes(manifest.canonical())
    assert manifest_id == manifest.id
    authorize = CapabilityAuthorizer(SECRET, store)
    # Not kept in memory: read from the store at the first request.
    grant = authorize(issue(SECRET, 7, manifest_id))
    assert grant is not None
    assert grant(mine) and not grant(other)
    assert authorize(SECRET) is None
    assert authorize(issue(SECRET, 7, "ee" * 32)) is None  # a manifest the store lacks


def test_bytes_sent_are_kept_in_all_and_per_job(tmp_path: Path) -> None:
    auth = CapabilityAuthorizer(SECRET, Store(tmp_path / "store"), clock=lambda: NOW)
    one, two = auth.issue(1, M), auth.issue(2, M)
    auth.sent(one, 100)
    auth.sent(two, 5)
    auth.sent(one, 20)
    auth.sent("not a capability", 7)  # counted in all, for no job
    assert (auth.sent_for(1), auth.sent_for(2), auth.sent_for(3)) == (120, 5, None)
    assert auth.bytes_sent == 132
