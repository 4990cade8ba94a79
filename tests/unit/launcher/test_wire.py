"""Wire messages: round trips, and refusal of what a side does not serve or cannot trust."""

from __future__ import annotations

import pytest

from launcher import wire


def test_round_trip_every_node_message() -> None:
    messages: list[wire.Message] = [
        wire.Hello("node1", {"cpus_logical": 2}, {"bytes_used": 0}),
        wire.Heartbeat([0.1, 0.2, 0.3], {"total": 1, "available": 1}, {}),
        wire.Prepared(7, False, "object 00ab... failed verification 3 times"),
        wire.Output.of(7, 0, "stdout", b"\x00\xffbinary"),
        wire.Exited(7, 1, 143, 15, {"utime": 0.5}),
    ]
    for m in messages:
        assert wire.decode(wire.encode(m), wire.NODE_TO_MASTER) == m
    out = wire.decode(wire.encode(messages[3]), wire.NODE_TO_MASTER)
    assert isinstance(out, wire.Output) and out.payload() == b"\x00\xffbinary"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"v": 1, "type": "exec", "job": 1, "tasks": []}', "not served here"),
        ('{"v": 2, "type": "exited", "job": 1, "task": 0, "status": 0}', "version 1"),
        ('{"v": 1, "type": "exited", "job": "1", "task": 0, "status": 0}', "'job'"),
        ('{"v": 1, "type": "exited", "job": true, "task": 0, "status": 0}', "'job'"),
        ('{"v": 1, "type": "prepared", "job": 1, "accepted": 1}', "'accepted'"),
        ('{"v": 1, "type": "exited", "job": 1}', "missing"),
        ("[1, 2]", "version 1"),
        ("{", "not JSON"),
    ],
)
def test_node_side_refusals(text: str, problem: str) -> None:
    with pytest.raises(wire.WireError, match=problem):
        wire.decode(text, wire.NODE_TO_MASTER)


def test_master_messages_are_not_accepted_from_nodes_and_vice_versa() -> None:
    prepare = wire.encode(wire.Prepare(1, {}, [], "t"))
    assert isinstance(wire.decode(prepare, wire.MASTER_TO_NODE), wire.Prepare)
    with pytest.raises(wire.WireError, match="'prepare' is not served here"):
        wire.decode(prepare, wire.NODE_TO_MASTER)
    hello = wire.encode(wire.Hello("n", {}, {}))
    with pytest.raises(wire.WireError, match="'hello' is not served here"):
        wire.decode(hello, wire.MASTER_TO_NODE)


def test_a_notice_goes_node_to_master_and_master_to_user_printable_only() -> None:
    notice = wire.Notice(7, "/scratch is not on this node; the job runs without it")
    assert wire.decode(wire.encode(notice), wire.NODE_TO_MASTER) == notice
    relayed = wire.Notice(7, notice.text, node="n1")
    assert wire.decode(wire.encode(relayed), wire.MASTER_TO_USER) == relayed
    with pytest.raises(wire.WireError, match="'notice' is not served here"):
        wire.decode(wire.encode(notice), wire.MASTER_TO_NODE)
    # It is printed on the submitter's terminal: no escape sequence, no second line.
    for text in ("", "x\x1b[2J", "a\nb", "x" * (wire.MAX_NOTICE + 1)):
        with pytest.raises(wire.WireError, match="printable"):
            wire.decode(wire.encode(wire.Notice(7, text)), wire.NODE_TO_MASTER)


def test_a_nodes_problems_ride_its_hello_and_health_printable_and_bounded() -> None:
    line = "mount /home failed: Connection refused"
    hello = wire.Hello("n1", {}, {}, problems=[line])
    assert wire.decode(wire.encode(hello), wire.NODE_TO_MASTER) == hello
    old = '{"v": 1, "type": "hello", "name": "n1", "hardware": {}, "cache": {}}'
    assert wire.decode(old, wire.NODE_TO_MASTER) == wire.Hello("n1", {}, {})  # none said
    for health in (wire.Health([line]), wire.Health([])):
        assert wire.decode(wire.encode(health), wire.NODE_TO_MASTER) == health
    # It becomes a drain reason shown in tables: one printable line each, a few at most.
    for bad in (["a\nb"], [""], ["x\x1b[2J"], [line] * (wire.MAX_PROBLEMS + 1)):
        with pytest.raises(wire.WireError, match="'problems'"):
            wire.decode(wire.encode(wire.Health(bad)), wire.NODE_TO_MASTER)
        with pytest.raises(wire.WireError, match="'problems'"):
            wire.decode(wire.encode(wire.Hello("n1", {}, {}, problems=bad)), wire.NODE_TO_MASTER)


def test_a_fill_report_round_trips_through_prepared_and_absent_keys_are_zero() -> None:
    report = wire.FillReport(3, 1, 300, 120, 80, 0.25)
    sent = wire.Prepared(7, True, None, report.to_wire())
    got = wire.decode(wire.encode(sent), wire.NODE_TO_MASTER)
    assert isinstance(got, wire.Prepared)
    assert wire.FillReport.from_wire(got.fill) == report
    assert sent.fill["seconds"] == 0.25  # the key nodes have always sent
    assert wire.FillReport.from_wire({"objects_total": 2, "seconds": 1}) == wire.FillReport(
        objects_total=2, fill_seconds=1.0
    )


@pytest.mark.parametrize(
    ("fill", "problem"),
    [
        ({"objects_total": "3"}, "'objects_total' must be a count"),
        ({"objects_hit": True}, "'objects_hit' must be a count"),
        ({"bytes_total": 1.5}, "'bytes_total' must be a count"),
        ({"bytes_from_master": -1}, "'bytes_from_master' must be a count"),
        ({"bytes_from_peers": 2**63}, "'bytes_from_peers' must be a count"),
        ({"seconds": float("nan")}, "'seconds' must be a number of seconds"),
        ({"seconds": None}, "'seconds' must be a number of seconds"),
        ({"objects_total": 1, "objects_hit": 2}, "2 hits of 1 objects"),
    ],
)
def test_a_fill_report_with_a_bad_field_is_a_wire_error_naming_it(
    fill: dict[str, object], problem: str
) -> None:
    with pytest.raises(wire.WireError, match=problem):
        wire.FillReport.from_wire(fill)


def test_prepares_sharing_one_manifest_encode_as_each_would_alone() -> None:
    manifest = {"version": 1, "entries": [{"path": "bin/true", "note": '"shared-x"'}]}
    prepares = [
        wire.Prepare(9, manifest, [{"url": f"http://10.0.0.{i}:1", "kind": "peer"}], "tok", {})
        for i in range(3)
    ]
    texts = wire.encode_sharing(prepares, "manifest")
    assert texts == [wire.encode(p) for p in prepares]
    assert [wire.decode(t, wire.MASTER_TO_NODE) for t in texts] == prepares


def test_sharing_a_value_that_differs_between_messages_is_refused() -> None:
    a = wire.Prepare(9, {"entries": []}, [], "tok", {})
    b = wire.Prepare(9, {"entries": []}, [], "tok", {})  # equal, not the same object
    with pytest.raises(ValueError, match=r"Prepare\.manifest differs"):
        wire.encode_sharing([a, b], "manifest")
