"""SiteMounter: everything but the mount(2) call itself, which tests inject."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from bootsvc.mounts import SiteMount
from launcher.node import sitemounts
from launcher.node.sitemounts import SiteMounter

HOME = "10.1.0.1:/home"
MOUNTINFO_LINE = "36 25 0:32 / {target} rw,relatime shared:1 - {fstype} {source} rw,vers=4.1\n"


class FakeKernel:
    """mount(2) that records each call, fails with the errno queued for a target, and
    writes a mountinfo line for each success."""

    def __init__(self, mountinfo: Path) -> None:
        self.mountinfo = mountinfo
        mountinfo.write_text("22 1 0:21 / / rw - tmpfs rootfs rw\n")
        self.calls: list[tuple[str, str, str, int, str]] = []
        self.errors: dict[str, int] = {}

    def __call__(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.calls.append((source, target, fstype, flags, data))
        code = self.errors.get(target)
        if code is not None:
            raise OSError(code, os.strerror(code), target)
        with self.mountinfo.open("a") as f:
            f.write(MOUNTINFO_LINE.format(target=target, fstype=fstype, source=source))


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path / "mountinfo")


def _mounter(kernel: FakeKernel, mounts: list[SiteMount], **kwargs: object) -> SiteMounter:
    return SiteMounter(
        mounts,
        mount=kernel,
        resolve=lambda host: {"filer": "10.1.0.9"}.get(host, host),
        local_address=lambda peer: "10.1.0.23",
        mountinfo=kernel.mountinfo,
        **kwargs,  # type: ignore[arg-type]
    )


def test_mounts_with_addr_and_clientaddr_and_makes_the_target(
    kernel: FakeKernel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = str(tmp_path / "site/home")
    caplog.set_level(logging.INFO, "launcher.node.sitemounts")
    mounter = _mounter(kernel, [SiteMount(HOME, target, "nfs4", "vers=4.1,hard")])
    assert mounter.mount_all() == ()
    assert kernel.calls == [
        (HOME, target, "nfs4", 0, "vers=4.1,hard,addr=10.1.0.1,clientaddr=10.1.0.23")
    ]
    assert Path(target).is_dir() and Path(target).stat().st_mode & 0o777 == 0o755
    assert f"mounted {HOME} at {target}" in caplog.text
    assert mounter.targets == (target,)


def test_a_name_is_resolved_and_given_options_are_kept(kernel: FakeKernel, tmp_path: Path) -> None:
    target = str(tmp_path / "data")
    given = "port=2050,addr=10.9.9.9,clientaddr=10.9.9.1"
    _mounter(kernel, [SiteMount("filer:/data", target, "nfs4", given)]).mount_all()
    assert kernel.calls[0][4] == given
    kernel.calls.clear()
    other = str(tmp_path / "other")
    _mounter(kernel, [SiteMount("filer:/other", other, "nfs4", "port=2050")]).mount_all()
    assert kernel.calls[0][4] == "port=2050,addr=10.1.0.9,clientaddr=10.1.0.23"


def test_other_filesystem_types_get_their_options_untouched(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    target = str(tmp_path / "scratch")
    _mounter(kernel, [SiteMount("mds:/lustre", target, "lustre", "flock")]).mount_all()
    assert kernel.calls == [("mds:/lustre", target, "lustre", 0, "flock")]


def test_already_mounted_is_skipped_and_another_source_is_a_problem(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    home, data = str(tmp_path / "my home"), str(tmp_path / "data")
    with kernel.mountinfo.open("a") as f:
        f.write(
            MOUNTINFO_LINE.format(target=home.replace(" ", "\\040"), fstype="nfs4", source=HOME)
        )
        f.write(MOUNTINFO_LINE.format(target=data, fstype="nfs4", source="10.7.7.7:/old"))
    mounter = _mounter(kernel, [SiteMount(HOME, home), SiteMount("10.1.0.1:/data", data)])
    assert mounter.mount_all() == (
        f"mount {data} failed: 10.7.7.7:/old is mounted there; unmount it",
    )
    assert kernel.calls == []


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ECONNREFUSED, "Connection refused (no NFS server answers there)"),
        (errno.ENOENT, "No such file or directory (the export is not there"),
        (errno.ENODEV, "No such device (the kernel has no such filesystem type"),
        (errno.EIO, "Input/output error"),
    ],
)
def test_a_failure_is_a_problem_line(
    kernel: FakeKernel, tmp_path: Path, code: int, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = str(tmp_path / "home")
    kernel.errors[target] = code
    mounter = _mounter(kernel, [SiteMount(HOME, target)])
    (line,) = mounter.mount_all()
    assert line.startswith(f"mount {target} failed: {words}")
    assert mounter.problems() == (line,)
    assert line in caplog.text  # logged, so the master's `beoctl node log` shows it


def test_an_unknown_host_is_a_problem(kernel: FakeKernel, tmp_path: Path) -> None:
    def unknown(host: str) -> str:
        raise OSError(errno.ENOENT, "Name or service not known")

    target = str(tmp_path / "home")
    mounter = SiteMounter(
        [SiteMount("nowhere:/home", target)],
        mount=kernel,
        resolve=unknown,
        mountinfo=kernel.mountinfo,
    )
    (line,) = mounter.mount_all()
    assert line.startswith(f"mount {target} failed: nowhere unknown or unreachable")
    assert kernel.calls == []


def test_a_mount_point_that_cannot_be_made_is_a_problem(kernel: FakeKernel, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    target = str(tmp_path / "file/home")
    (line,) = _mounter(kernel, [SiteMount(HOME, target)]).mount_all()
    assert line == f"mount {target} failed: cannot make the mount point (Not a directory)"


def test_only_the_failed_are_tried_again_and_changes_are_told(
    kernel: FakeKernel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home, data = str(tmp_path / "home"), str(tmp_path / "data")
    kernel.errors[data] = errno.ENOENT
    told: list[tuple[str, ...]] = []
    mounter = _mounter(
        kernel, [SiteMount(HOME, home), SiteMount("10.1.0.1:/data", data)], on_change=told.append
    )
    first = mounter.mount_all()
    assert len(first) == 1 and told == [first]
    assert mounter.mount_all() == first
    assert told == [first]  # same set: not told again
    assert caplog.text.count(first[0]) == 1  # nor logged again
    assert [c[1] for c in kernel.calls] == [home, data, data]
    del kernel.errors[data]
    assert mounter.mount_all() == ()
    assert told == [first, ()]
    assert [c[1] for c in kernel.calls] == [home, data, data, data]


def test_a_slow_attempt_is_a_pending_problem(kernel: FakeKernel, tmp_path: Path) -> None:
    target = str(tmp_path / "home")
    now = [100.0]
    entered, release = threading.Event(), threading.Event()

    def blocking(source: str, target: str, fstype: str, flags: int, data: str) -> None:
        entered.set()
        release.wait(10)
        kernel(source, target, fstype, flags, data)

    mounter = SiteMounter(
        [SiteMount(HOME, target)],
        mount=blocking,
        resolve=lambda h: h,
        local_address=lambda p: "10.1.0.23",
        mountinfo=kernel.mountinfo,
        slow_s=15,
        clock=lambda: now[0],
    )
    mounter.start()
    try:
        assert entered.wait(10)
        assert mounter.problems() == ()  # just begun
        assert not mounter.wait_first_pass(0.01)
        now[0] += 40
        assert mounter.problems() == (
            f"mount {target} pending: no answer from {HOME} for 40 s (the kernel keeps trying)",
        )
        release.set()
        assert mounter.wait_first_pass(10)
        assert mounter.problems() == ()
    finally:
        release.set()
        mounter.stop(10)


def test_the_thread_retries_until_mounted_then_mounts_again_what_goes(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    target = str(tmp_path / "home")
    kernel.errors[target] = errno.ECONNREFUSED
    told: list[tuple[str, ...]] = []
    cleared = threading.Semaphore(0)

    def on_change(problems: tuple[str, ...]) -> None:
        told.append(problems)
        if not problems:
            cleared.release()
        else:
            kernel.errors.pop(target, None)  # the server comes up before the next try

    mounter = _mounter(
        kernel, [SiteMount(HOME, target)], on_change=on_change, retry_s=0.01, watch_s=0.01
    )
    mounter.start()
    try:
        assert cleared.acquire(timeout=10)
        assert mounter.wait_first_pass(10)
        assert len(told) == 2 and told[-1] == ()
        calls = len(kernel.calls)
        time.sleep(0.1)  # watched, still mounted: not mounted again
        assert len(kernel.calls) == calls
        # Someone unmounts it: the watch sees it and mounts it again.
        kernel.mountinfo.write_text("22 1 0:21 / / rw - tmpfs rootfs rw\n")
        deadline = time.monotonic() + 10
        while len(kernel.calls) == calls:
            assert time.monotonic() < deadline, "not mounted again"
            time.sleep(0.01)
        assert kernel.calls[-1][:2] == (HOME, target)
        assert mounter.problems() == ()
    finally:
        mounter.stop(10)
    assert mounter._thread is not None and not mounter._thread.is_alive()


def test_a_broken_listener_does_not_stop_the_mounter(kernel: FakeKernel, tmp_path: Path) -> None:
    def broken(problems: tuple[str, ...]) -> None:
        raise RuntimeError("listener bug")

    target = str(tmp_path / "home")
    kernel.errors[target] = errno.ENOENT
    mounter = _mounter(kernel, [SiteMount(HOME, target)], on_change=broken)
    assert len(mounter.mount_all()) == 1


def test_nfs_options() -> None:
    assert sitemounts.nfs_options("", "10.0.0.1", "10.0.0.2") == (
        "addr=10.0.0.1,clientaddr=10.0.0.2"
    )
    assert sitemounts.nfs_options("vers=4.1,addr=1.2.3.4", "10.0.0.1", "10.0.0.2") == (
        "vers=4.1,addr=1.2.3.4,clientaddr=10.0.0.2"
    )


def test_mounted_sources() -> None:
    text = (
        "22 1 0:21 / / rw - tmpfs rootfs rw\n"
        "36 22 0:32 / /home rw - nfs4 10.0.0.1:/home rw\n"
        "37 22 0:33 / /a\\040b rw shared:2 - nfs4 10.0.0.1:/x\\040y rw\n"
        "garbage\n"
        "38 22 0:34 / /home rw - nfs4 10.0.0.2:/home rw\n"
    )
    assert sitemounts.mounted_sources(text) == {
        "/": "rootfs",
        "/home": "10.0.0.2:/home",
        "/a b": "10.0.0.1:/x y",
    }


def test_resolve_and_local_address_on_loopback() -> None:
    assert sitemounts.resolve("127.0.0.1") == "127.0.0.1"
    assert sitemounts.resolve("localhost") in ("127.0.0.1", "::1")
    assert sitemounts.local_address("127.0.0.1") == "127.0.0.1"


def test_syscall_mount_raises_the_kernels_errno(tmp_path: Path) -> None:
    # An unknown filesystem type: ENODEV as root, EPERM otherwise; either way an OSError.
    with pytest.raises(OSError) as caught:
        sitemounts.syscall_mount("none", str(tmp_path), "no-such-fs-type", 0, "")
    assert caught.value.errno in (errno.ENODEV, errno.EPERM)
    assert caught.value.filename == str(tmp_path)
