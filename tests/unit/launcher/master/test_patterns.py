"""Batch output file names: the Slurm-style % sequences."""

from __future__ import annotations

import pytest

from launcher.errors import OutputPatternError
from launcher.master.patterns import Fields, check, expand

FIELDS = Fields(job=42, node="node3", task=7, user="ann", name="prog")


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("beolaunch-%j.out", "beolaunch-42.out"),
        ("/h/out-%j-%n-%t", "/h/out-42-node3-7"),
        ("%N.%u.%x", "node3.ann.prog"),
        ("%4j-%3t", "0042-007"),
        ("100%%-%J", "100%-42"),
        ("plain.txt", "plain.txt"),
    ],
)
def test_sequences_expand(pattern: str, name: str) -> None:
    assert expand(pattern, FIELDS) == name


@pytest.mark.parametrize("pattern", ["out-%q", "out-%", "", "a\0b", "%5"])
def test_an_unknown_sequence_is_named(pattern: str) -> None:
    with pytest.raises(OutputPatternError) as caught:
        check(pattern)
    assert caught.value.pattern == pattern
