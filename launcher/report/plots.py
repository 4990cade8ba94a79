"""The report's plots as PNG bytes, drawn with matplotlib's Agg backend.

The only module that imports matplotlib (0.3 to 1 s to import), and only
``beoacct report`` imports it. Figures are made with ``Figure`` directly, not
``pyplot``: no global figure registry to leak or to share between threads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

import matplotlib

matplotlib.use("Agg")  # no display: draw to PNG only, before pyplot could pick one

from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from launcher.report.series import (
    DAY,
    Bytes,
    HitRate,
    Latency,
    Run,
    UserJobs,
)

_SIZE = (9.0, 3.2)  # inches; at 100 dpi a 900x320 PNG, 20-40 KB
_DPI = 100
#: users drawn apart on "jobs per user"; the rest are summed as "others"
TOP_USERS = 6
MASTER_COLOUR, PEERS_COLOUR = "#c0504d", "#4f81bd"


def _axes(ylabel: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    # matplotlib.dates has no annotations for these (3.11): hence the ignores.
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    return fig, ax


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI)
    return out.getvalue()


def _x(starts: Sequence[datetime]) -> list[float]:
    return [float(mdates.date2num(s)) for s in starts]  # type: ignore[no-untyped-call]


def hit_rate(rows: Sequence[HitRate], width: int) -> bytes:
    """Percent of needed objects already cached, per period (no point where a
    period's jobs needed no object)."""
    fig, ax = _axes("cache hit rate (%)")
    pts = [(r.start, 100 * r.rate) for r in rows if r.rate is not None]
    ax.plot(_x([s for s, _ in pts]), [v for _, v in pts], marker="o", markersize=3)
    ax.set_ylim(0, 100)
    return _png(fig)


def _bytes_unit(largest: int) -> tuple[str, float]:
    for name, size in (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10)):
        if largest >= size:
            return name, size
    return "bytes", 1.0


def bytes_by_source(rows: Sequence[Bytes], width: int) -> bytes:
    """Stacked bars: bytes nodes fetched from the master, and from peers, per period."""
    unit, size = _bytes_unit(max((r.master + r.peers for r in rows), default=0))
    fig, ax = _axes(f"fetched ({unit})")
    x, bar = _x([r.start for r in rows]), width / DAY
    master = [r.master / size for r in rows]
    ax.bar(x, master, bar, align="edge", label="from the master", color=MASTER_COLOUR)
    ax.bar(
        x,
        [r.peers / size for r in rows],
        bar,
        bottom=master,
        align="edge",
        label="from peers",
        color=PEERS_COLOUR,
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return _png(fig)


def launch_latency(rows: Sequence[Latency], width: int) -> bytes:
    """Median and 95th percentile seconds from submission to start, per period."""
    fig, ax = _axes("submit to start (s)")
    x = _x([r.start for r in rows])
    ax.plot(x, [r.median for r in rows], marker="o", markersize=3, label="median")
    ax.plot(x, [r.p95 for r in rows], marker=".", linestyle="--", label="95th percentile")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return _png(fig)


def jobs_per_user(
    users: Sequence[int], names: dict[int, str], rows: Sequence[UserJobs], width: int
) -> bytes:
    """Stacked bars of jobs submitted per period, one colour per user (the
    TOP_USERS with most jobs; the rest as "others")."""
    fig, ax = _axes("jobs submitted")
    x, bar = _x([r.start for r in rows]), width / DAY
    bottom = [0.0] * len(rows)
    top, rest = list(users[:TOP_USERS]), set(users[TOP_USERS:])
    layers = [(names[u], [float(r.counts.get(u, 0)) for r in rows]) for u in top]
    if rest:
        others = [float(sum(n for u, n in r.counts.items() if u in rest)) for r in rows]
        layers.append(("others", others))
    for label, heights in layers:
        ax.bar(x, heights, bar, bottom=bottom, align="edge", label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return _png(fig)


def path_versions(runs: Sequence[Run], order: Sequence[str]) -> bytes:
    """One dot per job that ran the path, at its start time, on the row of the
    version (sha256) it ran; ``order``: the versions, oldest first."""
    fig, ax = _axes("version (sha256)")
    ax.grid(True, axis="x", alpha=0.3)
    row = {sha: i for i, sha in enumerate(order)}
    ax.scatter(_x([r.started for r in runs]), [row[r.sha256] for r in runs], s=12)
    ax.set_yticks(range(len(order)), [sha[:12] for sha in order])
    ax.set_ylim(-0.5, len(order) - 0.5)
    return _png(fig)
