"""The runtime hash: what it covers, that it changes with the code, and its cache."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from launcher.slurm import runtime


def _source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for package in ("launcher", "cachefs", "bootsvc"):
        (root / package / "__pycache__").mkdir(parents=True)
        (root / package / "__init__.py").write_text(f"# {package}\n")
        (root / package / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    return root


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "dep-1.0.dist-info").mkdir(parents=True)
    (site / "dep-1.0.dist-info" / "RECORD").write_text("dep/__init__.py,sha256=abc,10\n")
    return site


def test_covers_python_packages_and_records_but_not_bytecode(tmp_path: Path) -> None:
    src, site = _source(tmp_path), _site(tmp_path)
    paths = runtime.runtime_paths(sys.executable, src, [site, tmp_path / "absent"])
    assert str(src / "launcher" / "__init__.py") in paths
    assert str(site / "dep-1.0.dist-info" / "RECORD") in paths
    assert not any(p.endswith("x.pyc") for p in paths)
    assert os.path.realpath(sys.executable) in paths  # the interpreter itself
    assert any("libc.so" in p for p in paths)  # and what it loads


def test_hash_changes_with_the_code_and_the_feature_names_it(tmp_path: Path) -> None:
    src, site = _source(tmp_path), _site(tmp_path)
    first = runtime.compute(sys.executable, src, [site])
    assert len(first.sha256) == 64
    assert first.feature == "beolaunch-rt-" + first.sha256[:12]
    assert runtime.compute(sys.executable, src, [site]) == first
    (src / "cachefs" / "__init__.py").write_text("# changed\n")
    assert runtime.compute(sys.executable, src, [site]).sha256 != first.sha256
    (site / "dep-1.0.dist-info" / "RECORD").write_text("dep/__init__.py,sha256=def,10\n")
    assert runtime.compute(sys.executable, src, [site]).sha256 != first.sha256


def test_cache_is_used_while_no_file_changed(tmp_path: Path) -> None:
    src, site = _source(tmp_path), _site(tmp_path)
    cache = tmp_path / "rt.json"
    first = runtime.compute(sys.executable, src, [site], cache)
    stored = json.loads(cache.read_text())
    assert stored["sha256"] == first.sha256
    # A planted answer under the same key is returned: the files were not read again.
    cache.write_text(json.dumps({**stored, "sha256": "f" * 64}))
    assert runtime.compute(sys.executable, src, [site], cache).sha256 == "f" * 64
    (src / "launcher" / "new.py").write_text("x = 1\n")
    fresh = runtime.compute(sys.executable, src, [site], cache)
    assert fresh.sha256 not in ("f" * 64, first.sha256)
    cache.write_text("not json")
    assert runtime.compute(sys.executable, src, [site], cache) == fresh
