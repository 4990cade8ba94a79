"""Fuzzing the manifest loader (issue 12): ``loads`` and ``Manifest.from_document``
return a valid manifest or raise ManifestError, never anything else; what they
return keeps every rule the module promises and survives its canonical form."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cachefs.errors import ManifestError
from cachefs.manifest import KINDS, Manifest, check_path, loads
from tests import fuzzing

SHA = "ab" * 32
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
# Few components, so that duplicates, parents and children of each other come up often.
good_paths = st.lists(st.sampled_from(["a", "b", "é"]), max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)
bad_paths = st.lists(st.sampled_from(["a", "..", ".", "", "a\0"]), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts)
) | st.sampled_from(["a", "//a", "/a/", ""])
paths = good_paths | good_paths | good_paths | bad_paths


@st.composite
def entries(draw: st.DrawFn) -> Any:
    """A valid entry most of the time; else one with a field wrong, missing or extra."""
    if draw(st.integers(0, 19)) == 0:
        return draw(anything)
    kind = draw(st.sampled_from(KINDS))
    good = {
        "path": good_paths,
        "kind": st.just(kind),
        # small sets: twins that differ in one field come up often
        "mode": st.sampled_from([0o755, 0o644]) | st.integers(0, 0o7777),
        "size": st.sampled_from([0, 7]) | st.integers(0, 2**40) if kind == "file" else st.none(),
        "sha256": st.sampled_from([SHA, "cd" * 32]) if kind == "file" else st.none(),
        "target": st.sampled_from(["a", "/b"]) if kind == "symlink" else st.none(),
        "mtime": st.none() | st.sampled_from([0, 5]) | st.integers(0, 2**62),
    }
    doc: dict[str, Any] = {key: draw(strategy) for key, strategy in good.items()}
    if draw(st.booleans()):
        doc.pop("mtime")
    roll = draw(st.integers(0, 7))
    if roll == 0:
        doc.pop(draw(st.sampled_from(sorted(doc))))
    elif roll == 1:
        doc[draw(st.sampled_from(sorted(good)))] = draw(anything)
    elif roll == 2:
        doc["path"] = draw(paths)
    elif roll == 3:
        doc["kind"] = draw(st.sampled_from([*KINDS, "fifo"]))
    elif roll == 4:
        doc[draw(st.text(max_size=5))] = draw(anything)
    return doc


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """A valid document shape most of the time; else one top-level field wrong."""
    if draw(st.integers(0, 19)) == 0:
        return draw(anything)
    doc: dict[str, Any] = {
        "version": 1,
        "root": draw(good_paths),
        "owner": draw(st.sampled_from([None, 0, 1000])),
        "entries": draw(st.lists(entries(), max_size=6)),
    }
    entries_ = doc["entries"]
    if entries_ and isinstance(entries_[0], dict) and draw(st.booleans()):
        twin = dict(entries_[0])  # the same path again, with or without an mtime
        if "mtime" in twin and draw(st.booleans()):
            del twin["mtime"]
        else:
            twin["mtime"] = draw(st.sampled_from([None, 0, 5]))
        entries_.insert(draw(st.integers(0, len(entries_))), twin)
    roll = draw(st.integers(0, 9))
    if roll == 0:
        doc[draw(st.sampled_from(sorted(doc)))] = draw(anything)
    elif roll == 1:
        doc["root"] = draw(paths)
    elif roll == 2:
        doc["owner"] = draw(st.sampled_from([-1, True, "0", 2**70]))
    elif roll == 3:
        doc["id"] = draw(st.sampled_from(["0" * 64, 5, None]))
    elif roll == 4:
        del doc["version"]
    return doc


def check_manifest(m: Manifest) -> None:
    check_path(m.root)
    seen = [e.path for e in m]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    for e in m:
        assert e.kind in KINDS and 0 <= e.mode <= 0o7777
        if e.kind == "file":
            assert isinstance(e.size, int) and e.size >= 0 and e.sha256 is not None
    again = loads(m.canonical())
    assert again == m and again.id == m.id


def check_loads(data: str | bytes) -> None:
    try:
        m = loads(data)
    except ManifestError:
        return
    check_manifest(m)


def check_document(doc: Any) -> None:
    try:
        m = Manifest.from_document(doc)
    except ManifestError:
        return
    check_manifest(m)


TWIN = {"path": "/a", "kind": "dir", "mode": 0o755}


@given(doc=documents())
@example(doc={"root": "/a", "entries": [TWIN, {**TWIN, "mtime": 1}]})
@fuzzing.quick()
def test_from_document_quick(doc: Any) -> None:
    check_document(doc)


@pytest.mark.slow
@given(doc=documents())
@fuzzing.full()
def test_from_document_full(doc: Any) -> None:
    check_document(doc)


@given(data=st.binary(max_size=300) | documents().map(json.dumps))
@example(data="[" * 100_000 + "]" * 100_000)
@example(data=b'{"root": "/", "entries": [], "\xff": 1}')
@fuzzing.quick()
def test_loads_quick(data: str | bytes) -> None:
    check_loads(data)


@pytest.mark.slow
@given(data=st.binary(max_size=300) | documents().map(json.dumps))
@fuzzing.full()
def test_loads_full(data: str | bytes) -> None:
    check_loads(data)
