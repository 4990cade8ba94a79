"""Recording benchmark results: one line to the terminal, one record to results.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")


def report(
    name: str, figure: float, baseline: float, unit: str, goal: str, *, higher_is_better: bool
) -> dict[str, object]:
    """Print and append one result. ``ratio`` is how many times better the figure is
    than the baseline (>1 = better), whatever the unit's direction."""
    ratio = figure / baseline if higher_is_better else baseline / figure
    record = {
        "name": name,
        "figure": round(figure, 6),
        "baseline": round(baseline, 6),
        "unit": unit,
        "ratio": round(ratio, 3),
        "goal": goal,
    }
    print(
        f"{name}: {figure:.4g} {unit} vs baseline {baseline:.4g} {unit}: "
        f"{ratio:.2f}x better (goal: {goal})"
    )
    results = []
    if RESULTS.exists():
        results = json.loads(RESULTS.read_text())
    results.append(record)
    tmp = RESULTS.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(RESULTS)
    return record
