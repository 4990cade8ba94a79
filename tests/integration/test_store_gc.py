"""beoctl store gc: objects outside the retention period go, everything in use stays."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher import config as cfg
from launcher.cli import beoctl
from launcher.state import migrate
from launcher.state.base import utcnow
from launcher.state.db import transaction
from launcher.state.record import record_job, record_submitted_manifest


def test_gc_keeps_recent_and_running_manifests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "beo"
    assert beoctl.main(["init", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    monkeypatch.setenv(cfg.CONFIG_ENV, str(state / "config.toml"))
    config = cfg.load(None)
    store = Store(config.store_dir)
    files = {}
    for name in ("old", "shared", "new", "running"):
        files[name] = tmp_path / f"{name}.bin"
        files[name].write_bytes(f"{name} contents".encode() * 100)

    def submit(names: list[str], days_ago: int, *, job_state: str | None = None) -> None:
        paths = [str(files[n]) for n in names]
        manifest = snapshot(paths[0], paths, store, owner=1000)
        engine = migrate.open_engine(config.database_url)
        with transaction(engine) as s:
            record_submitted_manifest(s, manifest, created_at=utcnow() - timedelta(days=days_ago))
            if job_state:
                job = record_job(s, scheduler="local", uid=1000, manifest_id=manifest.id)
                job.state = job_state
        engine.dispose()

    submit(["old", "shared"], days_ago=60)
    submit(["new", "shared"], days_ago=1)
    submit(["running"], days_ago=90, job_state="running")
    digest = {n: snapshot(str(p), [str(p)], None).objects().popitem()[0] for n, p in files.items()}
    assert all(store.has(d) for d in digest.values())

    assert beoctl.main(["store", "gc", "--retention", "30", "--grace", "3600"]) == 0
    assert capsys.readouterr().out.startswith("removed 0 objects")  # all inside the grace
    assert beoctl.main(["store", "gc", "--retention", "30", "--grace", "0"]) == 0
    assert capsys.readouterr().out.startswith("removed 1 objects")
    assert not store.has(digest["old"])
    assert all(store.has(digest[n]) for n in ("shared", "new", "running"))
