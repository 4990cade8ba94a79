"""Fuzzing the wire decoder (issue 12): whatever a peer sends, ``decode`` returns a
message of an allowed type whose fields have their declared types, or raises
WireError; never anything else. A decoded message encodes back to itself."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, get_type_hints

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from launcher import wire
from tests import fuzzing

SIDES = {
    "node_to_master": wire.NODE_TO_MASTER,
    "master_to_node": wire.MASTER_TO_NODE,
    "master_to_user": wire.MASTER_TO_USER,
}
ALL_TYPES = sorted({t for side in SIDES.values() for t in side} | {"nope", ""})

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _field_value(hint: Any) -> st.SearchStrategy[Any]:
    """A value of the field's declared type most of the time, anything otherwise."""
    origin = getattr(hint, "__origin__", None)
    right: st.SearchStrategy[Any]
    if hint is int:
        right = st.integers(min_value=-(2**40), max_value=2**40)
    elif hint is float:
        right = st.floats(allow_nan=False)
    elif hint is str:
        right = st.text(max_size=30)
    elif hint is bool:
        right = st.booleans()
    elif origin is list:
        right = st.lists(json_value, max_size=3)
    elif origin is dict:
        right = st.dictionaries(st.text(max_size=8), json_value, max_size=3)
    else:  # X | None
        args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
        right = st.none() | (_field_value(args[0]) if args else json_value)
    return st.one_of(right, right, right, json_value)


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """Mostly message-shaped objects (a known type, its fields, some wrong), or anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_value)
    name = draw(st.sampled_from(ALL_TYPES))
    doc: dict[str, Any] = {"type": name}
    doc["v"] = draw(st.sampled_from([1, 1, 1, 1, 2, 0, "1", True, 1.0, None]))
    cls = next((side[name] for side in SIDES.values() if name in side), None)
    if cls is not None:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if draw(st.integers(0, 9)) > 0:
                value = draw(_field_value(hints[f.name]))
                if f.name == "data" and draw(st.booleans()):
                    value = draw(st.text(alphabet="ABab01+/=", max_size=9))
                doc[f.name] = value
    doc.update(draw(st.dictionaries(st.text(max_size=6), json_value, max_size=2)))
    return doc


def _text(doc: Any) -> str:
    return json.dumps(doc)


def check_decode(raw: str | bytes, side: str) -> None:
    allowed = SIDES[side]
    try:
        message = wire.decode(raw, allowed)
    except wire.WireError:
        return
    assert type(message) in allowed.values()
    hints = get_type_hints(type(message))
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        hint = hints[f.name]
        if hint in (int, str, bool):
            assert type(value) is hint, (f.name, value)
        elif hint is float:
            assert type(value) in (int, float), (f.name, value)
    if isinstance(message, wire.Output):
        message.payload()  # the master and beosub decode it: it must be base64
    assert wire.decode(wire.encode(message), allowed) == message


DEEP = "[" * 100_000 + "]" * 100_000


@given(doc=documents(), side=st.sampled_from(sorted(SIDES)))
@example(
    doc={"v": 1, "type": "output", "job": 1, "task": 0, "stream": "stdout", "data": "x"},
    side="node_to_master",
)
@example(
    doc={"v": 1, "type": "output", "job": 1, "task": 0, "stream": "stdout", "data": "\x80"},
    side="master_to_user",
)
@example(doc={"v": True, "type": "release", "job": 1}, side="master_to_node")
@fuzzing.quick()
def test_decode_documents_quick(doc: Any, side: str) -> None:
    check_decode(_text(doc), side)


@pytest.mark.slow
@given(doc=documents(), side=st.sampled_from(sorted(SIDES)))
@fuzzing.full()
def test_decode_documents_full(doc: Any, side: str) -> None:
    check_decode(_text(doc), side)


@given(raw=st.binary(max_size=200) | st.text(max_size=200), side=st.sampled_from(sorted(SIDES)))
@example(raw=DEEP, side="node_to_master")
@example(raw=b'{"v": 1, "type": "hello", "name": "\xff"}', side="node_to_master")
@fuzzing.quick()
def test_decode_raw_quick(raw: str | bytes, side: str) -> None:
    check_decode(raw, side)


@pytest.mark.slow
@given(raw=st.binary(max_size=400) | st.text(max_size=400), side=st.sampled_from(sorted(SIDES)))
@fuzzing.full()
def test_decode_raw_full(raw: str | bytes, side: str) -> None:
    check_decode(raw, side)
