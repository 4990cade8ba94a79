"""QEMU: a PXE-booted node mounts its site filesystems (``[[boot.mounts]]``) over NFSv4.

The lab's master (launcher.cluster.vmlab) hands the node ``{master}:/home`` at
``/home``; an NFS server on the master's address serves it: Debian's
nfs-ganesha (userspace, NFSv4 on 2049 of the lab's namespace; this host's
kernel has no NFS server), started here with a raw config until ``beoctl nfs
apply`` writes it. Stage 3 loads the NFS client modules it carries and
mounts with mount(2) (launcher.node.sitemounts). The second test serves a
wrong export first: the node logs the problem line, and once the server
serves the right path its retry mounts it. The last two restart the master
with other mounts: none (the boot time without), and a server address where
nothing answers (the agent starts after 30 s; how long mount(2) blocks).

Each test prints the VM's seconds from power-on to ``up`` (TCG, and other
processes on the machine: not a benchmark).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tomli_w

from launcher.cluster.bootnet import BootNetwork
from launcher.cluster.vmlab import VmLab
from launcher.errors import VirtualNodeError
from tests.integration.bootlab import missing_or_skip, require_qemu, test_kernel

pytestmark = pytest.mark.slow
BOOT_TIMEOUT_S = 300
#: The retry thread tries every 10 s; the node log arrives through syslog.
RETRY_WAIT_S = 90
#: How long the last test waits for mount(2) to a silent server to give up.
SILENT_WAIT_S = 300

_CONF = """\
NFS_CORE_PARAM {{ Protocols = 4; NFS_Port = 2049; Bind_addr = {address};
  Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}
NFSV4 {{ Graceless = true; Allow_Numeric_Owners = true; Only_Numeric_Owners = true;
  RecoveryBackend = fs; RecoveryRoot = "{root}/recovery"; }}
EXPORT {{ Export_Id = 1; Path = "{path}"; Pseudo = {pseudo}; Protocols = 4;
  Transports = TCP; Squash = root_squash; SecType = sys; Access_Type = None;
  CLIENT {{ Clients = {clients}; Access_Type = RW; }} FSAL {{ Name = VFS; }} }}
"""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class Ganesha:
    """nfs-ganesha in the lab's namespace on the master's address, exporting
    ``root/home`` under a pseudo path of the test's choosing."""

    def __init__(self, net: BootNetwork, root: Path) -> None:
        self.net = net
        self.root = root
        self.export = root / "home"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, pseudo: str) -> None:
        conf = self.root / "ganesha.conf"
        conf.write_text(
            _CONF.format(
                address=self.net.master_address,
                root=self.root,
                path=self.export,
                pseudo=pseudo,
                clients=self.net.network,
            )
        )
        log = self.root / "ganesha.log"
        since = log.stat().st_size if log.exists() else 0
        argv = ["ganesha.nfsd", "-F", "-L", str(log), "-f", str(conf), "-p", str(self.root / "pid")]
        self.process = subprocess.Popen(
            self.net.argv(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "NFS SERVER INITIALIZED" not in _read(log)[since:]:
            assert self.process.poll() is None, f"ganesha exited; see {log}"
            assert time.monotonic() < deadline, f"ganesha not serving after 60 s; see {log}"
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def lab() -> Iterator[VmLab]:
    require_qemu()
    if shutil.which("ganesha.nfsd") is None:
        missing_or_skip("needs nfs-ganesha and nfs-ganesha-vfs (make test installs them)")
    kernel = test_kernel()
    assert kernel.deb is not None, "the kernel cache has no .deb: rerun .ci/kernel-fetch"
    state = Path(tempfile.mkdtemp(prefix="beoboot-mounts-"))
    mounts = [{"source": "{master}:/home", "target": "/home"}]
    lab = VmLab.create(state, f"bm-{secrets.token_hex(3)}", 87, boot={"mounts": mounts})
    try:
        lab.setup(kernel.deb)
        yield lab
    finally:
        lab.close()
        lab.remove_state()


@pytest.fixture
def nfs(lab: VmLab) -> Iterator[Ganesha]:
    root = Path(tempfile.mkdtemp(prefix="beoboot-nfs-"))
    root.chmod(0o755)
    server = Ganesha(lab.net, root)
    server.export.mkdir(mode=0o755)
    (server.export / "hello.txt").write_text("hello from the master\n")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def wait_node_log(lab: VmLab, name: str, text: str, timeout: float) -> str:
    """The node's log (``beoctl node log``) once it holds ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        log = lab.run("beoctl", "node", "log", name)
        if text in log:
            return log
        assert time.monotonic() < deadline, f"{text!r} not in {name}'s log:\n{log[-3000:]}"
        time.sleep(2)


def test_a_booted_node_mounts_home_from_the_master(lab: VmLab, nfs: Ganesha) -> None:
    nfs.start("/home")
    vm = lab.add_node(1)
    vm.start()
    up = lab.wait_up([vm.name], BOOT_TIMEOUT_S)
    print(f"\n{vm.name} up {up[vm.name]:.1f} s after power-on, with /home mounted")
    source = f"{lab.net.master_address}:/home"
    console = vm.console()
    assert f"mounting {source} at /home" in console
    assert f"mounted {source} at /home (nfs4, " in console
    assert not re.search(r"insmod \S+ failed", console)  # every module loaded
    log = wait_node_log(lab, vm.name, f"mounted {source} at /home", 60)
    assert f"addr={lab.net.master_address}" in log and "mount /home failed" not in log


def test_a_wrong_export_is_logged_and_mounted_once_fixed(lab: VmLab, nfs: Ganesha) -> None:
    nfs.start("/wrong")
    vm = lab.add_node(2)
    vm.start()
    vm.wait_for(r"mount /home failed: No such file or directory", BOOT_TIMEOUT_S)
    started = vm.started
    log = wait_node_log(lab, vm.name, "mount /home failed: No such file or directory", 60)
    assert "the export is not there" in log
    print(f"\n{vm.name}: mount failure logged {time.monotonic() - started:.1f} s after power-on")
    nfs.stop()
    nfs.start("/home")
    fixed = time.monotonic()
    source = f"{lab.net.master_address}:/home"
    vm.wait_for(rf"mounted {source} at /home", RETRY_WAIT_S)
    print(f"{vm.name}: mounted {time.monotonic() - fixed:.1f} s after the export was fixed")
    wait_node_log(lab, vm.name, f"mounted {source} at /home", 60)
    up = lab.wait_up([vm.name], BOOT_TIMEOUT_S)
    print(f"{vm.name} up {up[vm.name]:.1f} s after power-on")


def _console_time(console: str, pattern: str) -> float:
    """Seconds of the day of the first console line matching ``pattern`` (the boot
    module logs ``YYYY-MM-DD HH:MM:SS,mmm name LEVEL: message``)."""
    found = re.search(rf"(\d\d):(\d\d):(\d\d),(\d\d\d) \S+ \w+: {pattern}", console)
    assert found is not None, f"{pattern!r} not on the console:\n{console[-3000:]}"
    hours, minutes, seconds, millis = (int(g) for g in found.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


@contextmanager
def mounts_given(lab: VmLab, mounts: list[dict[str, str]]) -> Iterator[None]:
    """The lab's master restarted with ``[[boot.mounts]]`` = ``mounts``; as before after."""
    text = lab.config.read_text()
    lab.stop_master()
    try:
        config = tomllib.loads(text)
        config["boot"]["mounts"] = mounts
        lab.config.write_text(tomli_w.dumps(config))
        lab.start_master()
        yield
    finally:
        lab.stop_master()
        lab.config.write_text(text)
        lab.start_master()


def test_without_mounts_nothing_is_mounted(lab: VmLab) -> None:
    with mounts_given(lab, []):
        vm = lab.add_node(4)
        vm.start()
        up = lab.wait_up([vm.name], BOOT_TIMEOUT_S)
        print(f"\n{vm.name} up {up[vm.name]:.1f} s after power-on, no site mounts")
        assert "mounting" not in vm.console()


def test_a_silent_server_does_not_hold_the_agent_back(lab: VmLab) -> None:
    # An address of the lab's network where nothing answers (not even ARP):
    # the measurement docs/boot.md gives for a wrong server address.
    silent = lab.net.network.network_address + 250
    with mounts_given(lab, [{"source": f"{silent}:/home", "target": "/home"}]):
        vm = lab.add_node(3)
        vm.start()
        up = lab.wait_up([vm.name], BOOT_TIMEOUT_S)
        print(f"\n{vm.name} up {up[vm.name]:.1f} s after power-on, its server silent")
        console = vm.console()
        blocked = "site mounts: still trying after 30 s; starting the agent" in console
        print(f"{vm.name}: first try {'still blocked' if blocked else 'over'} after 30 s")
        began = _console_time(console, f"mounting {silent}:/home at /home")
        try:
            found = vm.wait_for(r"mount /home failed: [^\n]*", SILENT_WAIT_S)
        except VirtualNodeError:
            print(f"{vm.name}: mount(2) still blocked {SILENT_WAIT_S} s after `up`")
            return
        ended = _console_time(vm.console(), "mount /home failed: ")
        print(f"{vm.name}: {found.group(0)!r} {ended - began:.1f} s after mount(2) began")
