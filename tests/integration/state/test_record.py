"""Recording validates before writing, and a failed change leaves nothing behind."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from cachefs.manifest import Entry, build
from launcher.errors import StateError
from launcher.state.db import transaction
from launcher.state.models import Manifest, ManifestEntry, StoredObject
from launcher.state.nodes import add_node, get_node
from launcher.state.queries import find_job
from launcher.state.record import (
    EntryRecord,
    record_acceptance,
    record_job,
    record_manifest,
    record_submitted_manifest,
    unpin_job,
)
from launcher.wire import FillReport
from tests.integration.state.populate import M1, M1_ENTRIES, populate, sha


def _count(engine: Engine, model: type) -> int:
    with transaction(engine, readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (EntryRecord("relative/lib.so", "file", 0o644, sha("x"), 1), "absolute path"),
        (EntryRecord("/usr/../etc/shadow", "file", 0o644, sha("x"), 1), "without '..'"),
        (EntryRecord("/usr/lib/x.so", "file", 0o644, "not-a-hash", 1), "64 lowercase hex"),
        (EntryRecord("/usr/lib/x.so", "file", 0o644, None, None), "needs sha256 and size"),
        (EntryRecord("/usr/lib/x.so", "symlink", 0o777), "needs a target"),
        (EntryRecord("/usr/lib/x.so", "fifo", 0o644), "kind 'fifo'"),
    ],
)
def test_bad_manifest_entry_writes_nothing(
    engine: Engine, entry: EntryRecord, message: str
) -> None:
    good = EntryRecord("/bin/prog", "file", 0o755, sha("prog"), 10)
    with pytest.raises(StateError, match=message), transaction(engine) as s:
        record_manifest(s, sha("m"), 1000, "/bin/prog", [good, entry])
    assert _count(engine, Manifest) == 0
    assert _count(engine, StoredObject) == 0


def test_failure_late_in_a_transaction_rolls_back_all_of_it(engine: Engine) -> None:
    with pytest.raises(StateError, match="not recorded"), transaction(engine) as s:
        record_manifest(s, M1, 1000, "/opt/demo/prog", M1_ENTRIES)
        record_job(s, scheduler="local", uid=1000, manifest_id=sha("unknown"))
    assert _count(engine, Manifest) == 0
    assert _count(engine, ManifestEntry) == 0


def test_record_manifest_is_idempotent_and_dedupes_objects(engine: Engine) -> None:
    for _ in range(2):
        with transaction(engine) as s:
            record_manifest(s, M1, 1000, "/opt/demo/prog", M1_ENTRIES)
    assert _count(engine, Manifest) == 1
    assert _count(engine, StoredObject) == 3
    with pytest.raises(StateError, match="already recorded for uid 1000"), transaction(engine) as s:
        record_manifest(s, M1, 1001, "/opt/demo/prog", M1_ENTRIES)


def test_bad_fill_report_and_scheduler_are_refused(engine: Engine) -> None:
    with transaction(engine) as s:
        record_manifest(s, M1, 1000, "/opt/demo/prog", M1_ENTRIES)
        node = add_node(s, "n1")
        with pytest.raises(StateError, match="scheduler 'pbs'"):
            record_job(s, scheduler="pbs", uid=1000, manifest_id=M1)
        job = record_job(s, scheduler="local", uid=1000, manifest_id=M1)
        with pytest.raises(StateError, match="5 hits of 3 objects"):
            record_acceptance(s, job, node, FillReport(3, 5, 10, 10, 0, 1.0))


def test_unpin_is_idempotent(engine: Engine) -> None:
    with transaction(engine) as s:
        cluster = populate(s)
    for expected in (4, 0):
        with transaction(engine) as s:
            assert unpin_job(s, get_node(s, "n2"), find_job(s, str(cluster.job2))) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "N1"}, "hostname label"),
        ({"name": "n1", "mac": "52:54:00:zz:00:01"}, "six hex pairs"),
        ({"name": "n1", "address": "10.0.0.300"}, "not an IP address"),
    ],
)
def test_bad_node_is_refused(engine: Engine, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(StateError, match=message), transaction(engine) as s:
        add_node(s, **kwargs)


def test_duplicate_mac_names_the_owner(engine: Engine) -> None:
    with transaction(engine) as s:
        add_node(s, "n1", mac="52:54:00:00:00:01")
    with pytest.raises(StateError, match="already belongs to node n1"), transaction(engine) as s:
        add_node(s, "n2", mac="52-54-00-00-00-01")


def test_submitted_cachefs_manifest_is_recorded_under_its_id(engine: Engine) -> None:
    closure = build("/opt/demo/prog", [Entry("/opt/demo/prog", "file", 0o755, 1000, sha("p"))])
    with pytest.raises(StateError, match="has no owner"), transaction(engine) as s:
        record_submitted_manifest(s, closure)
    submitted = closure.with_owner(1000)
    with transaction(engine) as s:
        row = record_submitted_manifest(s, submitted)
        assert (row.id, row.owner_uid, row.root_program) == (submitted.id, 1000, "/opt/demo/prog")
        assert [(e.path, e.object_sha256) for e in row.entries] == [("/opt/demo/prog", sha("p"))]
