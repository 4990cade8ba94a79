"""``beoctl boot``: the real Debian kernel .deb imported, listed, assigned and removed,
through ``beoctl.main`` on a state made by ``beoctl init`` (SQLite and PostgreSQL).

The kernel is the one ``.ci/kernel-fetch`` unpacks (``make test`` runs it) into
``$BEOLAUNCH_KERNEL_DIR`` or /var/cache/beolaunch/kernel, else /tmp/kdeb (the .deb and
its extraction in x/). Missing, these tests fail under CI and skip otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.cli import beoctl
from launcher.config import CONFIG_ENV


@dataclass(frozen=True)
class RealKernel:
    deb: Path
    tree: Path  # boot/vmlinuz-VERSION and lib/modules/VERSION with its indexes
    version: str


def real_kernel() -> RealKernel:
    fetched = Path(os.environ.get("BEOLAUNCH_KERNEL_DIR", "/var/cache/beolaunch/kernel"))
    for deb_dir, tree in ((fetched, fetched), (Path("/tmp/kdeb"), Path("/tmp/kdeb/x"))):
        debs = sorted(deb_dir.glob("linux-image-*.deb"))
        vmlinuz = sorted(tree.glob("boot/vmlinuz-*"))
        if debs and vmlinuz:
            return RealKernel(debs[-1], tree, vmlinuz[-1].name.removeprefix("vmlinuz-"))
    reason = (
        f"no Debian linux-image .deb with its extraction in {fetched} or /tmp/kdeb: "
        "run .ci/kernel-fetch (make test does)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def kernel() -> RealKernel:
    return real_kernel()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def state(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state dir made by ``beoctl init`` (on PostgreSQL: with --db, a fresh schema)."""
    state_dir = tmp_path / "beo"
    argv = ["init", "--state-dir", str(state_dir)]
    if request.param == "postgresql":
        argv += ["--db", str(request.getfixturevalue("pg_url"))]
    assert beoctl.main(argv) == 0
    monkeypatch.setenv(CONFIG_ENV, str(state_dir / "config.toml"))
    return state_dir


@pytest.fixture
def sqlite_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state_dir = tmp_path / "beo"
    assert beoctl.main(["init", "--state-dir", str(state_dir)]) == 0
    monkeypatch.setenv(CONFIG_ENV, str(state_dir / "config.toml"))
    return state_dir


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def images_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert beoctl.main(["boot", "images", "--json", *args]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def kernels_left(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "boot" / "kernels").iterdir())


# dpkg-deb -x unpacks 400 MB from xz: 5 s on an idle machine, 12 s beside QEMU tests.
@pytest.mark.slow
def test_deb_import_list_assign_and_remove(
    state: Path, kernel: RealKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    version = kernel.version
    vmlinuz_sha = sha256_file(kernel.tree / "boot" / f"vmlinuz-{version}")
    capsys.readouterr()
    assert beoctl.main(["boot", "images"]) == 0
    assert "(no boot images)" in capsys.readouterr().out

    assert beoctl.main(["boot", "import-kernel", str(kernel.deb)]) == 0
    out, err = capsys.readouterr()
    assert f"extracting {kernel.deb.name} ..." in err
    assert f"running depmod for {version} ..." in err  # Debian's .deb has no modules.dep
    assert out.startswith(f"imported kernel {version} as image linux-{version} ")
    modules = state / "boot" / "kernels" / version / "lib" / "modules" / version
    for index in ("modules.dep", "modules.alias"):
        assert (modules / index).is_file()
    assert (modules / "kernel" / "drivers" / "net" / "virtio_net.ko").is_file()
    assert "virtio_net" in (modules / "modules.alias").read_text()
    assert kernels_left(state) == [version]  # no temp dir left

    # Again: recognised by the .deb's sha256, not extracted again.
    assert beoctl.main(["boot", "import-kernel", str(kernel.deb)]) == 0
    out, err = capsys.readouterr()
    assert "nothing changed" in out
    assert "extracting" not in err
    assert beoctl.main(["boot", "import-kernel", str(kernel.deb), "--name", "other"]) == 1
    assert f"this .deb is already the kernel image 'linux-{version}'" in capsys.readouterr().err

    [row] = images_json(capsys)
    assert row["name"] == f"linux-{version}"
    assert row["kind"] == "kernel"
    assert row["sha256"] == vmlinuz_sha
    assert row["size"] == (kernel.tree / "boot" / f"vmlinuz-{version}").stat().st_size
    assert row["nodes"] == 0
    assert row["built_from"] == {
        "version": version,
        "source": {"deb": kernel.deb.name, "sha256": sha256_file(kernel.deb)},
        "modules_dir": f"boot/kernels/{version}/lib/modules",
    }
    assert (state / "boot" / "images" / vmlinuz_sha).stat().st_size == row["size"]
    assert images_json(capsys, "--kind", "stage2") == []

    assert beoctl.main(["boot", "images"]) == 0
    table = capsys.readouterr().out
    assert vmlinuz_sha[:12] in table and vmlinuz_sha not in table
    assert kernel.deb.name in table

    # Assign by sha256 prefix; the node count follows.
    assert beoctl.main(["node", "add", "n1"]) == 0
    assert beoctl.main(["boot", "assign", "n1", vmlinuz_sha[:8]]) == 0
    out, err = capsys.readouterr()
    assert f"node n1 boots kernel linux-{version}" in out
    # Assigned, not refused: the admin is told what the node still lacks.
    assert "warning: node n1 cannot boot yet: no stage2 or stage3 image" in err
    assert [r["nodes"] for r in images_json(capsys)] == [1]

    assert beoctl.main(["boot", "remove", f"linux-{version}"]) == 1
    err = capsys.readouterr().err
    assert f"boot image linux-{version}: assigned to 1 node(s) (n1)" in err
    assert "'beoctl boot assign NODE --default kernel' first, or remove with --force" in err
    assert (state / "boot" / "images" / vmlinuz_sha).exists()

    assert beoctl.main(["boot", "assign", "n1", "--default", "kernel"]) == 0
    assert "boots the newest kernel image from now on" in capsys.readouterr().out
    assert [r["nodes"] for r in images_json(capsys)] == [0]

    assert beoctl.main(["boot", "remove", f"linux-{version}"]) == 0
    assert capsys.readouterr().out.strip() == f"removed kernel image linux-{version}"
    assert images_json(capsys) == []
    assert not (state / "boot" / "images" / vmlinuz_sha).exists()
    assert kernels_left(state) == []


def test_assign_errors_name_the_node_and_image(
    sqlite_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert beoctl.main(["node", "add", "n1"]) == 0
    capsys.readouterr()
    assert beoctl.main(["boot", "assign", "n9", "linux-x"]) == 2
    assert "no node named 'n9'" in capsys.readouterr().err
    assert beoctl.main(["boot", "assign", "n1", "linux-x"]) == 2
    assert "no boot image named 'linux-x'" in capsys.readouterr().err
    assert beoctl.main(["boot", "assign", "n1"]) == 2
    assert "give IMAGE or --default KIND" in capsys.readouterr().err
    assert beoctl.main(["boot", "remove", "linux-x"]) == 2
    assert "'beoctl boot images' lists them" in capsys.readouterr().err


def test_directory_import_and_force_remove(
    sqlite_state: Path, kernel: RealKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    state = sqlite_state
    assert beoctl.main(["boot", "import-kernel", str(kernel.tree), "--name", "k-dir"]) == 0
    out, err = capsys.readouterr()
    assert "copying" in err
    assert out.startswith(f"imported kernel {kernel.version} as image k-dir ")
    [row] = images_json(capsys)
    built = row["built_from"]
    assert isinstance(built, dict)
    assert built["source"] == {"dir": str(kernel.tree.resolve())}

    # The same kernel under another name: refused before 400 MB are copied again.
    assert beoctl.main(["boot", "import-kernel", str(kernel.tree), "--name", "k-2"]) == 1
    out, err = capsys.readouterr()
    assert "boot image k-2: the same bytes" in err
    assert "already the kernel image 'k-dir'; use that name" in err
    assert "copying" not in err
    assert kernels_left(state) == [kernel.version]

    assert beoctl.main(["node", "add", "n1"]) == 0
    assert beoctl.main(["boot", "assign", "n1", "k-dir"]) == 0
    capsys.readouterr()
    assert beoctl.main(["boot", "remove", "k-dir", "--force"]) == 0
    assert capsys.readouterr().out.strip() == "removed kernel image k-dir; unassigned from n1"
    assert kernels_left(state) == []
    assert list((state / "boot" / "images").iterdir()) == []


def test_bad_deb_is_refused_and_leaves_nothing(
    sqlite_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "linux-image-bogus.deb"
    bogus.write_text("not a Debian package\n")
    assert beoctl.main(["boot", "import-kernel", str(bogus)]) == 1
    err = capsys.readouterr().err
    assert f"beoctl: kernel import from {bogus}: dpkg-deb -x failed" in err
    assert kernels_left(sqlite_state) == []
    assert beoctl.main(["boot", "import-kernel", str(tmp_path / "absent.deb")]) == 2
    assert "does not exist" in capsys.readouterr().err
