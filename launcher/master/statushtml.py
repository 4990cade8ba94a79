"""HTML of the status page's parts (pure functions of a snapshot or a page's rows).

Every value from outside (node names, reasons, log lines, paths) goes through
``html.escape``; the page runs no inline script (the CSP forbids it), only
``/static/status.js``, which draws the same markup from each live snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from html import escape
from typing import Any


def e(value: object) -> str:
    return escape("" if value is None else str(value))


def size(n: object) -> str:
    """Bytes in binary units (``1.5 GiB``); ``-`` when unknown."""
    if not isinstance(n, int | float):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def when(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def document(title: str, body: str, *, uid: int | None = None) -> str:
    who = (
        "" if uid is None else f"<span class='who'>uid {uid}{' (admin)' if uid == 0 else ''}</span>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{e(title)}</title>"
        "<link rel='stylesheet' href='/static/status.css'>"
        "<script src='/static/status.js' defer></script></head>"
        f"<body data-uid='{'' if uid is None else uid}'>"
        f"<header><a href='/'>Beolaunch</a> {who}</header><main>{body}</main></body></html>"
    )


def tile(node: Mapping[str, Any]) -> str:
    total, avail = node.get("mem_total"), node.get("mem_available")
    mem = (
        f"{size(total - avail)} / {size(total)}"
        if isinstance(total, int) and isinstance(avail, int)
        else "-"
    )
    used, budget = node.get("cache_used"), node.get("cache_budget")
    cache = f"{size(used)} / {size(budget)}" if budget else "-"
    load = node.get("load")
    return (
        f"<a class='tile {e(node['state'])}' href='/nodes/{e(node['name'])}' "
        f"data-node='{e(node['name'])}' title='{e(node.get('reason') or node['state'])}'>"
        f"<b>{e(node['name'])}</b><span class='state'>{e(node['state'])}</span>"
        f"<span>load {'-' if load is None else e(load)}</span>"
        f"<span>mem {mem}</span><span>cache {cache}</span></a>"
    )


def grid(nodes: Iterable[Mapping[str, Any]]) -> str:
    tiles = "".join(tile(n) for n in nodes)
    return tiles or "<p class='empty'>no nodes</p>"


def _state(job: Mapping[str, Any]) -> str:
    if job["state"] != "ended":
        return str(job["state"])
    return "ended" if job.get("exit") is None else f"ended, exit {job['exit']}"


def job_block(job: Mapping[str, Any], viewer: int | None) -> str:
    mine = viewer is not None and viewer in (0, job["uid"])
    title = f"job {job['job']}"
    head = f"<a href='/jobs/{job['job']}'>{title}</a>" if mine else title
    rows = []
    for n in job["nodes"]:
        total = n["files_total"]
        pct = 100 if n["filled"] else (100 * n["files_done"] // total if total else 0)
        rows.append(
            f"<li data-node='{e(n['name'])}' class='{'filled' if n['filled'] else 'filling'}'>"
            f"<span class='name'>{e(n['name'])}</span>"
            f"<progress max='100' value='{pct}'></progress>"
            f"<span class='pct'>{pct}%</span>"
            f"<span>{n['files_done']}/{total} files, {size(n['bytes_done'])}</span></li>"
        )
    return (
        f"<section class='job {e(job['state'])}' data-job='{job['job']}'><h3>{head} "
        f"<small>{e(job['user'])}, {e(_state(job))}, {job['tasks']} tasks</small></h3>"
        f"<ul>{''.join(rows)}</ul></section>"
    )


def jobs(entries: Iterable[Mapping[str, Any]], viewer: int | None) -> str:
    blocks = "".join(job_block(j, viewer) for j in entries)
    return blocks or "<p class='empty'>no job running</p>"


def table(head: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
