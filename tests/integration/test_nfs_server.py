"""``beoctl nfs apply`` serves ``[nfs]`` for real: nfs-ganesha in a boot network
namespace, on the master's address only, read and written with libnfs-utils'
userspace client from inside the namespace (this host's kernel has no NFS
client). What it proves: a user writes only as that user (the file is theirs
on disk), another uid is refused, root is squashed to nobody, an address
outside ``clients`` is refused, an edited ``[nfs]`` is live after apply, and
stop stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from launcher.cluster.bootnet import BootNetwork
from launcher.initialize import initialize
from tests.integration.bootlab import boot_network, missing_or_skip

pytestmark = pytest.mark.slow
BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
ALICE, BOB, NOBODY = 64001, 64002, 65534


@pytest.fixture
def need_ganesha() -> None:
    if os.geteuid() != 0:
        missing_or_skip("needs root (a network namespace, ganesha's VFS handles)")
    for program in ("ganesha.nfsd", "nfs-cp", "nfs-ls", "nfs-cat", "nsenter"):
        if shutil.which(program) is None:
            missing_or_skip(f"needs {program}: nfs-ganesha, nfs-ganesha-vfs, libnfs-utils")


@pytest.fixture
def tree() -> Iterator[Path]:
    """Exports whose every parent others can pass (tmp_path's base is 0700)."""
    top = Path(tempfile.mkdtemp(prefix="beo-nfs-"))
    top.chmod(0o755)
    homes = top / "homes"
    homes.mkdir(mode=0o755)
    for user, uid in (("alice", ALICE), ("bob", BOB)):
        (homes / user).mkdir(mode=0o700)
        os.chown(homes / user, uid, uid)
    (homes / "drop").mkdir()
    (homes / "drop").chmod(0o1777)
    (homes / "notice.txt").write_text("read me\n")
    (top / "data").mkdir(mode=0o755)
    (top / "data" / "input.dat").write_text("42\n")
    try:
        yield top
    finally:
        shutil.rmtree(top)


class Master:
    """The master's side: a state dir with [boot] and [nfs], beoctl run in ``net``."""

    def __init__(self, net: BootNetwork, state: Path, tree: Path) -> None:
        self.net = net
        self.config = state / "config.toml"
        self.tree = tree
        initialize(
            state,
            tables=lambda: {
                "boot": {
                    "interface": net.bridge,
                    "network": str(net.network),
                    "master_address": str(net.master_address),
                },
                "nfs": {"exports": [str(tree / "homes")], "server": "ganesha"},
            },
        )

    def beoctl(self, *argv: str, check: bool = True) -> str:
        done = subprocess.run(
            self.net.argv([str(BIN / "beoctl"), *argv]),
            env={**os.environ, "BEOLAUNCH_CONFIG": str(self.config)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"beoctl {' '.join(argv)}: {done.stderr}")
        return done.stdout

    def status(self) -> dict[str, Any]:
        rows: list[dict[str, Any]] = json.loads(self.beoctl("nfs", "status", "--json"))
        return rows[0]

    def edit_nfs(self, **keys: Any) -> None:
        doc = tomllib.loads(self.config.read_text())
        doc["nfs"].update(keys)
        self.config.write_text(tomli_w.dumps(doc))

    def url(self, path: Path | str, uid: int | None = None) -> str:
        who = f"&uid={uid}&gid={uid}" if uid is not None else ""
        return f"nfs://{self.net.master_address}{path}?version=4{who}"

    def client(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.net.argv(list(argv)), capture_output=True, text=True, timeout=60)

    def write(self, path: Path, uid: int | None) -> bool:
        """Whether ``uid`` (None: root) can create ``path`` over NFS."""
        source = self.tree / "source.txt"
        source.write_text(f"from {uid}\n")
        source.chmod(0o644)
        return self.client("nfs-cp", str(source), self.url(path, uid)).returncode == 0


@pytest.fixture
def master(need_ganesha: None, tree: Path, tmp_path: Path) -> Iterator[Master]:
    with boot_network(79) as net:
        m = Master(net, tmp_path / "state", tree)
        try:
            yield m
        finally:
            m.beoctl("nfs", "stop", check=False)
            for pid in net.pids():  # what stop left behind, if it failed
                os.kill(pid, 9)


def test_users_write_as_themselves_and_root_is_nobody(master: Master, tree: Path) -> None:
    homes = tree / "homes"
    said = master.beoctl("nfs", "apply")
    assert said.startswith("ganesha started (pid ")
    assert f"serving {homes} on {master.net.master_address}:2049" in said
    now = master.status()
    assert (now["running"], now["listening"], now["port"]) == (True, True, 2049)
    assert now["exports"] == [str(homes)] and now["clients"] == str(master.net.network)

    # Alice writes in her home; on the master the file is hers.
    assert master.write(homes / "alice" / "result.txt", ALICE)
    written = os.stat(homes / "alice" / "result.txt")
    assert (written.st_uid, written.st_gid) == (ALICE, ALICE)
    alice_reads = master.client("nfs-cat", master.url(homes / "alice" / "result.txt", ALICE))
    assert alice_reads.stdout == f"from {ALICE}\n"

    # Bob cannot read or write there.
    assert not master.write(homes / "alice" / "bob.txt", BOB)
    assert not (homes / "alice" / "bob.txt").exists()
    assert master.client("nfs-ls", master.url(homes / "alice", BOB)).returncode != 0

    # Root on a node is nobody: refused in a root-owned 0755 directory, and what
    # it writes where anyone may is nobody's.
    assert not master.write(homes / "root.txt", None)
    assert not (homes / "root.txt").exists()
    assert master.write(homes / "drop" / "root.txt", None)
    assert os.stat(homes / "drop" / "root.txt").st_uid == NOBODY
    assert master.client("nfs-cat", master.url(homes / "notice.txt")).stdout == "read me\n"


def test_edits_are_live_after_apply_and_stop_stops(master: Master, tree: Path) -> None:
    homes, data = tree / "homes", tree / "data"
    first = master.beoctl("nfs", "apply")
    pid = master.status()["pid"]
    assert first.startswith(f"ganesha started (pid {pid})")
    assert master.client("nfs-ls", master.url(data, ALICE)).returncode != 0

    # A new export: reloaded in place, the same process.
    master.edit_nfs(exports=[str(homes), str(data)])
    assert master.status()["pending"] is True
    assert master.beoctl("nfs", "apply").startswith(f"ganesha reloaded (pid {pid})")
    assert master.client("nfs-cat", master.url(data / "input.dat", ALICE)).stdout == "42\n"
    assert master.status()["pending"] is False

    # Clients on another network: this one (the master's own address) is refused.
    other = master.net.network.supernet(new_prefix=16).subnets(new_prefix=24)
    elsewhere = next(n for n in other if n != master.net.network)
    master.edit_nfs(clients=str(elsewhere))
    assert master.beoctl("nfs", "apply").startswith("ganesha reloaded")
    assert master.client("nfs-ls", master.url(homes, ALICE)).returncode != 0
    assert not master.write(homes / "alice" / "late.txt", ALICE)

    # Back on the cluster network, on another port: a restart (ganesha reads its
    # address and port only at start).
    master.edit_nfs(clients=str(master.net.network), port=12049)
    said = master.beoctl("nfs", "apply")
    assert said.startswith("ganesha restarted")
    new_pid = master.status()["pid"]
    assert new_pid != pid and _gone(pid)
    listing = master.client("nfs-ls", master.url(homes, ALICE) + "&nfsport=12049")
    assert "alice" in listing.stdout

    # Stop: the process is gone and nothing answers on the port.
    assert master.beoctl("nfs", "stop") == f"stopped ganesha (pid {new_pid})\n"
    assert _gone(new_pid)
    now = master.status()
    assert (now["running"], now["listening"], now["pid"]) == (False, False, None)
    assert master.client("nfs-ls", master.url(homes, ALICE) + "&nfsport=12049").returncode != 0
    assert master.beoctl("nfs", "stop") == "nothing was served; nothing changed\n"


def test_a_bad_export_is_refused_before_anything_starts(master: Master, tree: Path) -> None:
    link = tree / "link"
    link.symlink_to(tree / "homes")
    master.edit_nfs(exports=[str(link)])
    done = subprocess.run(
        master.net.argv([str(BIN / "beoctl"), "nfs", "apply"]),
        env={**os.environ, "BEOLAUNCH_CONFIG": str(master.config)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"beoctl: nfs export {link}: is a symlink (to {tree / 'homes'}): "
        "export the directory itself\n"
    )
    assert master.status()["running"] is False
    assert stat.S_ISLNK(os.lstat(link).st_mode)


def _gone(pid: int) -> bool:
    """No such process, or a zombie (an orphan's reaper may be slow, or, in some
    containers, absent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
