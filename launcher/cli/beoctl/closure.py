"""``beoctl closure``: the exact file set a program needs, with hashes (an exact ``ldd``)."""

from __future__ import annotations

import os

import click

from cachefs.closure import resolve
from cachefs.manifest import dumps
from cachefs.snapshot import SnapshotProgress, snapshot
from launcher.cli.output import emit
from launcher.cli.progress import byte_progress


@click.command(context_settings={"ignore_unknown_options": False})
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"id", "entries": [{"path", "kind", "mode", "size", "sha256", '
    '"target"}]} and the rest of the manifest document.',
)
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="PATH",
    help="Also include PATH (a file, directory or glob): dlopen'ed plugins, data. Repeatable.",
)
@click.argument("program")
def closure(as_json: bool, includes: tuple[str, ...], program: str) -> None:
    """Resolve PROGRAM's closure as the loader would, hash it, and print the manifest.

    PROGRAM is found through $PATH; $LD_LIBRARY_PATH applies as it would at run
    time. Nothing is stored: this is what 'beosub --dry-run' will snapshot.
    """
    found = resolve(program, env=dict(os.environ), includes=includes)
    with byte_progress("hashing") as update:

        def on_progress(p: SnapshotProgress) -> None:
            update(p.files_done, p.files_total, p.bytes_done, p.bytes_total)

        manifest = snapshot(found.root, found.paths, None, progress=on_progress)
    if as_json:
        click.echo(dumps(manifest))
        return
    rows = [
        {
            "path": e.path,
            "kind": e.kind,
            "mode": f"{e.mode:04o}",
            "size": e.size,
            "sha256": e.sha256[:16] if e.sha256 else None,
            "target": e.target,
        }
        for e in manifest
    ]
    emit(rows, ("path", "kind", "mode", "size", "sha256", "target"), "table")
    total = sum(manifest.objects().values())
    click.echo(
        f"manifest {manifest.id}: {len(manifest)} entries, "
        f"{len(manifest.objects())} objects, {total} bytes"
    )
