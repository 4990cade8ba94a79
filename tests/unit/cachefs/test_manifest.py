"""Manifest: canonical bytes, id, and refusal of unsafe documents however they arrive."""

from __future__ import annotations

import hashlib
import json

import pytest

from cachefs.errors import ManifestError
from cachefs.manifest import Entry, Manifest, build, dumps, loads

A = hashlib.sha256(b"a").hexdigest()
B = hashlib.sha256(b"b").hexdigest()


def sample(owner: int | None = None) -> Manifest:
    return build(
        "/usr/bin/prog",
        [
            Entry("/usr/lib/libx.so.1", "symlink", 0o777, target="libx.so.1.2"),
            Entry("/usr/bin/prog", "file", 0o755, 10, A),
            Entry("/usr/lib/libx.so.1.2", "file", 0o644, 20, B),
            Entry("/usr/lib", "dir", 0o755),
        ],
        owner,
    )


def test_canonical_bytes_and_id() -> None:
    m = sample()
    assert [e.path for e in m] == sorted(e.path for e in m)
    canonical = m.canonical()
    assert b" " not in canonical and canonical.startswith(b'{"entries":[')
    assert m.id == hashlib.sha256(canonical).hexdigest()
    # The order entries were given in does not change the id.
    assert build(m.root, reversed(m.entries)).id == m.id


def test_owner_is_part_of_the_id() -> None:
    assert sample().id != sample(1000).id
    assert sample().with_owner(1000).id == sample(1000).id


def test_round_trip_through_json_and_claimed_id() -> None:
    m = sample(1000)
    assert loads(m.canonical()) == m
    assert loads(dumps(m)).id == m.id
    doc = json.loads(dumps(m))
    doc["entries"][0]["mode"] = 0o700
    with pytest.raises(ManifestError, match=f"not the {m.id} it claims"):
        Manifest.from_document(doc)
    with pytest.raises(ManifestError, match="it claims"):
        loads(m.canonical(), expect_id=hashlib.sha256(b"other").hexdigest())


def test_mtime_is_optional_and_part_of_the_id() -> None:
    plain = build("/a", [Entry("/a", "file", 0o755, 10, A)])
    dated = build("/a", [Entry("/a", "file", 0o755, 10, A, mtime=1_700_000_000_000_000_000)])
    assert b"mtime" not in plain.canonical()
    assert dated.id != plain.id
    assert loads(dated.canonical()) == dated
    with pytest.raises(ManifestError, match="not ns since the epoch"):
        Entry("/a", "file", 0o755, 10, A, mtime=-1)


def test_objects_are_deduplicated() -> None:
    m = build("/a", [Entry("/a", "file", 0o755, 10, A), Entry("/b", "file", 0o644, 10, A)])
    assert m.objects() == {A: 10}


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"path": "usr/lib/x", "kind": "dir", "mode": 493}, "absolute path"),
        ({"path": "/usr/../etc/shadow", "kind": "dir", "mode": 493}, "not normalised"),
        ({"path": "/usr//lib", "kind": "dir", "mode": 493}, "not normalised"),
        ({"path": "/usr/lib/", "kind": "dir", "mode": 493}, "not normalised"),
        ({"path": "/usr/./lib", "kind": "dir", "mode": 493}, "not normalised"),
        ({"path": "/usr/li\u0000b", "kind": "dir", "mode": 493}, "NUL"),
        ({"path": "/x", "kind": "file", "mode": 420, "size": 1, "sha256": "abc"}, "sha256"),
        ({"path": "/x", "kind": "file", "mode": 420, "size": -1, "sha256": A}, "size >= 0"),
        ({"path": "/x", "kind": "symlink", "mode": 511}, "needs a non-empty target"),
        ({"path": "/x", "kind": "symlink", "mode": 511, "target": "a\u0000b"}, "without NUL"),
        ({"path": "/x", "kind": "dir", "mode": 0o10000}, "permission bits"),
        ({"path": "/x", "kind": "fifo", "mode": 420}, "kind 'fifo'"),
        ({"path": "/x", "kind": "dir", "mode": 493, "evil": 1}, "unknown keys"),
    ],
)
def test_unsafe_entries_are_refused_on_load(entry: dict[str, object], problem: str) -> None:
    base = {"path": None, "kind": None, "mode": None, "size": None, "sha256": None, "target": None}
    doc = {"version": 1, "root": "/x", "owner": None, "entries": [{**base, **entry}]}
    with pytest.raises(ManifestError, match=problem):
        loads(json.dumps(doc))


def test_structural_problems_are_refused() -> None:
    with pytest.raises(ManifestError, match="appears twice"):
        build("/a", [Entry("/a", "dir", 0o755), Entry("/a", "dir", 0o755)])
    with pytest.raises(ManifestError, match="parent /a is a file"):
        build("/a", [Entry("/a", "file", 0o755, 1, A), Entry("/a/b", "dir", 0o755)])
    with pytest.raises(ManifestError, match="parent /a is a file"):
        build("/a", [Entry("/a", "file", 0o755, 1, A), Entry("/a/b/c", "dir", 0o755)])
    with pytest.raises(ManifestError, match="not valid JSON"):
        loads(b"{")


@pytest.mark.parametrize(
    "under",
    ["/tmp/a/x", "/tmp/a/x/y", "/tmp/a/deep/er/file"],
)
def test_an_entry_under_a_symlink_entry_is_refused(under: str) -> None:
    # The forged manifest of issue 12: root seeding /tmp would follow /tmp/a.
    entries = [
        Entry("/tmp", "dir", 0o1777),
        Entry("/tmp/a", "symlink", 0o777, target="/etc"),
        Entry(under, "dir", 0o755),
    ]
    with pytest.raises(ManifestError, match="under the symlink /tmp/a") as info:
        build("/bin/sh", entries)
    assert info.value.path == under
    doc = {"version": 1, "root": "/bin/sh", "owner": 1000, "entries": []}
    doc["entries"] = [e.document() for e in entries]
    with pytest.raises(ManifestError, match="under the symlink"):
        loads(json.dumps(doc))


def test_a_listed_directory_between_does_not_hide_a_symlink_above() -> None:
    with pytest.raises(ManifestError, match="under the symlink /l"):
        build(
            "/l/d/f",
            [
                Entry("/l", "symlink", 0o777, target="/etc"),
                Entry("/l/d", "dir", 0o755),
                Entry("/l/d/f", "file", 0o644, 1, A),
            ],
        )
    with pytest.raises(ManifestError, match="format version 2"):
        loads(json.dumps({"version": 2, "root": "/a", "entries": []}))
    with pytest.raises(ManifestError, match="not a uid"):
        build("/a", [], owner=-1)
