"""--label: whole lines, per stream, a partial line kept until it ends."""

from __future__ import annotations

from launcher.labels import LineLabels, prefix


def test_lines_are_labelled_whole_and_streams_kept_apart() -> None:
    labels = LineLabels()
    p = prefix("node1", 0)
    assert labels.feed((0, "stdout"), p, b"a\nb") == b"node1.0: a\n"
    assert labels.feed((0, "stderr"), p, b"e\n") == b"node1.0: e\n"
    assert labels.feed((0, "stdout"), p, b"c\nd") == b"node1.0: bc\n"
    assert labels.rest((0, "stdout"), p) == b"node1.0: d\n"
    assert labels.rest((0, "stdout"), p) == b""
    assert prefix(None, 3) == b"?.3: "
