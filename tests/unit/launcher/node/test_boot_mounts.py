"""launcher.node.boot and the site mounts: the answer's list checked, kept with the
enrollment, mounted before the agent and handed to it as health and site binds."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from bootsvc.mounts import SiteMount
from launcher.node import boot
from launcher.node.sitemounts import SiteMounter

HOME = SiteMount("10.0.0.1:/home", "/home", "nfs4", "vers=4.1")
DATA = SiteMount("filer:/data", "/data")


def test_parse_mounts() -> None:
    assert boot.parse_mounts(None) == ((), ())
    assert boot.parse_mounts([HOME.to_wire(), DATA.to_wire()]) == ((HOME, DATA), ())
    good, bad = boot.parse_mounts(
        [HOME.to_wire(), {"source": "x:/y", "target": "/home"}, {"source": "nohost"}, "str"]
    )
    assert good == (HOME,)
    assert bad[0] == "mount refused: mounts[1] mounts /home a second time"
    assert bad[1].startswith("mount refused: key 'mounts[2].source': expected host:/path")
    assert bad[1].endswith("fix [[boot.mounts]] on the master and reboot")
    assert bad[2].startswith("mount refused: key 'mounts[3]': expected a table")
    assert boot.parse_mounts({"a": 1}) == (
        (),
        ("mounts refused: the master sent dict, not a list",),
    )


def test_mounts_saved_and_loaded_with_the_enrollment(tmp_path: Path) -> None:
    paths = boot.NodePaths(token=tmp_path / "token", enrollment=tmp_path / "enrollment.json")
    enrollment = boot.Enrollment(
        "n1", "secret", "ws://m:1/node", None, (HOME, DATA), ("mount refused: bad one",)
    )
    boot.save_enrollment(paths, enrollment)
    assert boot.load_enrollment(paths) == enrollment


def test_a_record_without_mounts_loads_with_none(tmp_path: Path) -> None:
    paths = boot.NodePaths(token=tmp_path / "token", enrollment=tmp_path / "enrollment.json")
    paths.token.write_text("secret\n")
    paths.enrollment.write_text('{"name": "n1", "control_url": "ws://m:1/node"}\n')
    loaded = boot.load_enrollment(paths)
    assert loaded is not None and (loaded.mounts, loaded.refused_mounts) == ((), ())


class _Mounter(SiteMounter):
    """A SiteMounter whose mount(2) fails for /data, never touching the machine."""

    def __init__(self, mounts: Sequence[SiteMount], mountinfo: Path) -> None:
        mountinfo.write_text("")

        def fake(source: str, target: str, fstype: str, flags: int, data: str) -> None:
            if target.endswith("/data"):
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), target)

        super().__init__(
            mounts,
            mount=fake,
            resolve=lambda host: "10.0.0.9",
            local_address=lambda peer: "10.0.0.23",
            mountinfo=mountinfo,
            retry_s=3600,
        )


def test_start_site_mounts_then_agent_options(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", "launcher.node")
    home = SiteMount(HOME.source, str(tmp_path / "home"), HOME.type, HOME.options)
    data = SiteMount(DATA.source, str(tmp_path / "data"))
    enrollment = boot.Enrollment(
        "n1", "t", "ws://m:4872/node", None, (home, data), ("mount refused: mounts[2] bad",)
    )
    mounter = boot.start_site_mounts(
        enrollment, first_pass_s=10, make=lambda m: _Mounter(m, tmp_path / "mountinfo")
    )
    try:
        assert f"mounting {home.source} at {home.target}, {data.source} at {data.target}" in (
            caplog.text
        )
        assert "mount refused: mounts[2] bad" in caplog.text
        assert f"mount {data.target} failed: No such file or directory" in caplog.text
        options = boot.agent_options(enrollment, boot.NodePaths(), 1 << 30, mounter)
        assert options.site_binds == (home.target, data.target)
        assert options.health() == (
            "mount refused: mounts[2] bad",
            f"mount {data.target} failed: No such file or directory (the export is not "
            "there: check the source path on the server)",
        )
    finally:
        mounter.stop(10)


def test_no_mounts_no_thread_and_no_health() -> None:
    enrollment = boot.Enrollment("n1", "t", "ws://m:4872/node", None)
    mounter = boot.start_site_mounts(enrollment, first_pass_s=0)
    assert mounter.problems() == () and mounter.targets == ()
    options = boot.agent_options(enrollment, boot.NodePaths(), 1 << 30, mounter)
    assert options.site_binds == ()
    assert options.health() == ()
    assert boot.agent_options(enrollment, boot.NodePaths(), 1 << 30).health is None
