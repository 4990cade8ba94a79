"""Resolving closures against ``ldd``.

The same 25 programs (those of PROGRAMS found on this machine, python3 among
them, whose closure also asks the interpreter for its startup modules) are
resolved by :func:`cachefs.closure.resolve`, one fresh call per program as
``beoctl closure`` does, and listed by ``ldd`` (one process per program), in
the same run, after one warm-up round of each. Figure and baseline are the
median over ROUNDS of the time for the whole set. Goal: faster than ldd.

Also printed (not recorded): one Resolver shared by the whole set, which parses
each common library once.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Callable

from bench.record import report
from cachefs.closure import Resolver, resolve

ENV = {"PATH": "/usr/bin:/usr/sbin:/bin:/sbin"}
PROGRAMS = (
    "ls", "bash", "python3", "gcc", "git", "curl", "ssh", "tar", "gzip", "perl", "openssl",
    "cp", "grep", "sed", "find", "make", "xz", "bzip2", "zstd", "sqlite3", "wget", "file",
    "less", "readelf", "objdump", "as", "ld", "g++", "diff", "sort", "dpkg", "gdb", "jq",
)  # fmt: skip
COUNT, ROUNDS = 25, 7


def programs() -> list[str]:
    found = [p for p in (shutil.which(n, path=ENV["PATH"]) for n in PROGRAMS) if p]
    if len(found) < COUNT:
        raise SystemExit(f"bench.closure: only {len(found)} of the programs are installed")
    return found[:COUNT]


def with_resolve(paths: list[str]) -> None:
    for path in paths:
        resolve(path, env=ENV)


def with_shared_resolver(paths: list[str]) -> None:
    resolver = Resolver()
    for path in paths:
        resolver.resolve(path, env=ENV)


def with_ldd(paths: list[str]) -> None:
    for path in paths:
        subprocess.run(["ldd", path], check=True, capture_output=True, env=ENV)


def median_seconds(run: Callable[[list[str]], None], paths: list[str]) -> float:
    run(paths)  # warm: page cache, Python imports
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run(paths)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    paths = programs()
    figure = median_seconds(with_resolve, paths)
    baseline = median_seconds(with_ldd, paths)
    shared = median_seconds(with_shared_resolver, paths)
    print(f"closure_25: one shared Resolver: {shared * 1000:.1f} ms for the set")
    report(
        "closure_25_programs",
        figure * 1000,
        baseline * 1000,
        "ms",
        "faster than ldd on the whole set, warm",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
