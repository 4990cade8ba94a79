"""A cluster of QEMU nodes that PXE boot from a real master: the boot tests, benchmark, demo.

The master (``beoctl master serve``: boot HTTP, TFTP, dnsmasq, logs, control,
objects) runs in a network namespace of the lab's own (:mod:`launcher.cluster.bootnet`)
whose bridge carries every VM's tap, so DHCP and broadcasts stay in the lab.
Its state dir is an ordinary one; admin commands (``beoctl``, ``beosub``)
reach the master through its Unix socket from the host, as on a real cluster.
Images come from the real builders: a kernel imported from a Debian .deb,
``build-stage2 --virtio``, ``build-stage3``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy import Engine, select

from launcher import config as cfg
from launcher.cluster.bootnet import BootNetwork
from launcher.cluster.qemu import VirtualNode, mac_for
from launcher.errors import ClusterProcessError
from launcher.initialize import initialize
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import Node

BIN = Path(sys.executable).parent


@dataclass
class VmLab:
    """State dir ``state``, namespace ``net``; :meth:`setup`, then nodes, then :meth:`close`."""

    state: Path
    net: BootNetwork
    pool: tuple[int, int] = (100, 150)
    master: subprocess.Popen[bytes] | None = None
    vms: list[VirtualNode] = field(default_factory=list)
    say: Callable[[str], None] = lambda _line: None
    #: ``beoctl nfs apply`` ran: ``close`` stops the NFS server
    serves_nfs: bool = False
    #: more keys of the ``[boot]`` table written by :meth:`setup` (``mounts``: site mounts)
    boot: dict[str, Any] = field(default_factory=dict)
    _engine: Engine | None = field(default=None, repr=False)

    @classmethod
    def create(cls, state: Path, netns: str, third_octet: int, **kw: Any) -> VmLab:
        return cls(state, BootNetwork(netns, IPv4Network(f"10.234.{third_octet}.0/24")), **kw)

    @property
    def config(self) -> Path:
        return self.state / "config.toml"

    def env(self) -> dict[str, str]:
        return {**os.environ, "BEOLAUNCH_CONFIG": str(self.config)}

    def run(
        self,
        *argv: str,
        timeout: float = 600,
        user: str | None = None,
        cwd: Path | None = None,
        in_net: bool = False,
    ) -> str:
        """A console script (``beoctl ...``) against the lab's state; its stdout.
        ``user``: run as that user (``runuser``), as a person submitting jobs would;
        ``in_net``: in the lab's network namespace, as the master's own services are.

        Raises ClusterProcessError with its stderr when it fails.
        """
        command = [str(BIN / argv[0]), *argv[1:]]
        if in_net:
            command = self.net.argv(command)
        if user is not None:
            command = [
                "runuser",
                "-u",
                user,
                "--",
                "env",
                f"BEOLAUNCH_CONFIG={self.config}",
                *command,
            ]
        done = subprocess.run(
            command,
            cwd=cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise ClusterProcessError(
                None, f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout

    def json(self, *argv: str) -> Any:
        return json.loads(self.run(*argv, "--json"))

    def setup(
        self,
        kernel_deb: Path,
        *,
        stage2: Path | None = None,
        exports: Sequence[str] = (),
        jobs: dict[str, Any] | None = None,
    ) -> None:
        """Namespace, state dir (``[boot]`` on the lab's bridge), images, master.

        ``stage2``: an initrd to register and use instead of building stage 2
        (the benchmark's single-large-initramfs baseline). ``exports``: the
        ``[nfs] exports`` the master serves the lab's network (``beoctl nfs
        apply``), which its nodes mount at the same paths. ``jobs``: the
        config's ``[jobs]`` table.
        """
        master = str(self.net.master_address)
        first, last = (self.net.network.network_address + n for n in self.pool)
        self.net.create()
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o755)  # users read the config and reach the master's socket
        initialize(
            self.state,
            tables=lambda: {
                "services": {
                    name: {"address": master}
                    for name in ("control", "objects", "logs", "boot_http", "tftp")
                },
                "boot": {
                    "interface": self.net.bridge,
                    "network": str(self.net.network),
                    "master_address": master,
                    "mode": "pool",
                    "pool_first": str(first),
                    "pool_last": str(last),
                    "ra": True,
                    **self.boot,
                },
                **({"nfs": {"exports": list(exports)}} if exports else {}),
                **({"jobs": jobs} if jobs is not None else {}),
            },
        )
        self.say("importing the kernel")
        self.run("beoctl", "boot", "import-kernel", str(kernel_deb))
        self.say("building stage 2")
        self.run("beoctl", "boot", "build-stage2", "--virtio")
        self.say("building stage 3")
        self.run("beoctl", "boot", "build-stage3")
        if exports:  # before the master, which says so when its [nfs] is not served
            self.say(f"serving {', '.join(exports)} over NFS to the lab's network")
            self.run("beoctl", "nfs", "apply", in_net=True)
            self.serves_nfs = True
        self.start_master()

    def set_exports(self, exports: Sequence[str]) -> None:
        """Change ``[nfs] exports`` in the config and apply it (the NFS server reloads)."""
        doc = tomllib.loads(self.config.read_text())
        doc.setdefault("nfs", {})["exports"] = list(exports)
        self.config.write_text(tomli_w.dumps(doc))
        self.run("beoctl", "nfs", "apply", in_net=True)
        self.serves_nfs = True

    def start_master(self) -> None:
        """``beoctl master serve`` in the lab's namespace; returns once its socket answers."""
        log = (self.state / "master.log").open("ab")
        with log:
            self.master = subprocess.Popen(
                self.net.argv([str(BIN / "beoctl"), "master", "serve"]),
                env=self.env(),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.master.poll() is not None:
                raise ClusterProcessError(None, f"master exited; see {self.state / 'master.log'}")
            with contextlib.suppress(ClusterProcessError):
                self.run("beostat", "nodes", timeout=10)
                return
            if time.monotonic() > deadline:
                raise ClusterProcessError(None, "master did not answer within 60 s")
            time.sleep(0.2)

    def stop_master(self) -> None:
        proc, self.master = self.master, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def add_node(self, index: int, *, accept: bool = True, memory_mib: int = 1024) -> VirtualNode:
        """VM ``index`` on its own tap; known to the master (``node add --mac``) if ``accept``."""
        vm = VirtualNode(
            f"vm{index}",
            mac_for(index),
            self.net.add_tap(f"tap{index}"),
            self.state / "vms" / f"vm{index}.serial",
            memory_mib=memory_mib,
            wrap=self.net.argv([]),
        )
        if accept:
            self.run("beoctl", "node", "add", vm.name, "--mac", vm.mac)
        self.vms.append(vm)
        return vm

    def node_states(self) -> dict[str, str]:
        """Each named node's state, read from the state database directly: a ``beoctl``
        process per poll takes seconds while four TCG guests hold both cores."""
        if self._engine is None:
            self._engine = open_engine(cfg.load(str(self.config)).database_url)
        with transaction(self._engine, readonly=True) as session:
            rows = session.execute(select(Node.name, Node.state).where(Node.name.is_not(None)))
            return {str(name): str(state) for name, state in rows}

    def wait_up(self, names: Sequence[str], timeout: float) -> dict[str, float]:
        """Seconds from each VM's power-on until its node is ``up`` (registered).

        Raises ClusterProcessError naming the nodes still down, with their consoles' tails.
        """
        started = {vm.name: vm.started for vm in self.vms}
        up: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while len(up) < len(names):
            states = self.node_states()
            now = time.monotonic()
            for name in names:
                if name not in up and states.get(name) in ("up", "busy"):
                    up[name] = now - started[name]
            if len(up) == len(names):
                break
            if now > deadline:
                late = [n for n in names if n not in up]
                tails = "\n".join(f"--- {vm.name}\n{vm.tail(8)}" for vm in self.vms)
                raise ClusterProcessError(
                    None, f"{', '.join(late)} not up within {timeout:.0f} s\n{tails}"
                )
            time.sleep(0.05)
        return up

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        for vm in self.vms:
            vm.stop()
        self.stop_master()
        if self.serves_nfs:
            with contextlib.suppress(ClusterProcessError):
                self.run("beoctl", "nfs", "stop")
        self.net.remove()

    def remove_state(self) -> None:
        shutil.rmtree(self.state, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m launcher.cluster.vmlab [-n N] [--user U]``: build the images, PXE boot
    N QEMU nodes from a master in a namespace of their own, run one job as U on them,
    print the nodes and one node's boot log, and tear everything down."""
    import argparse
    import secrets
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m launcher.cluster.vmlab")
    parser.add_argument("-n", "--nodes", type=int, default=1, choices=range(1, 9))
    parser.add_argument("--user", default="nobody", help="who submits the job")
    parser.add_argument(
        "--homes", action="store_true",
        help="export /home to the nodes over NFS and run the job in the user's home",
    )  # fmt: skip
    parser.add_argument(
        "--kernel-dir", type=Path, default=Path("/var/cache/beolaunch/kernel"),
        help="where .ci/kernel-fetch put Debian's kernel .deb",
    )  # fmt: skip
    args = parser.parse_args(argv)
    debs = sorted(args.kernel_dir.glob("*.deb"))
    if not debs:
        print(f"no kernel .deb in {args.kernel_dir}: run .ci/kernel-fetch", file=sys.stderr)
        return 1

    def say(line: str) -> None:
        print(f"== {line}", flush=True)

    state = Path(tempfile.mkdtemp(prefix="beolaunch-vmlab-"))
    lab = VmLab.create(state, f"vl-{secrets.token_hex(3)}", 84, say=say)
    try:
        started = time.monotonic()
        lab.setup(debs[-1], exports=("/home",) if args.homes else ())
        say(f"images built and master up in {time.monotonic() - started:.0f} s")
        say(lab.run("beoctl", "boot", "images").rstrip())
        vms = [lab.add_node(i + 1) for i in range(args.nodes)]
        say(f"powering on {args.nodes} QEMU node(s) (TCG, no KVM): PXE, stage 2, stage 3")
        for vm in vms:
            vm.start()
        up = lab.wait_up([vm.name for vm in vms], 600)
        say("registered after " + ", ".join(f"{n} {t:.1f} s" for n, t in sorted(up.items())))
        say(lab.run("beoctl", "node", "list").rstrip())
        if args.homes:
            _job_in_home(lab, args.user, args.nodes, say)
        else:
            say(f"beosub -N {args.nodes} as {args.user}: a job on the booted nodes")
            out = lab.run(
                "beosub", "-N", str(args.nodes), "--label", "--", "/bin/sh", "-c",
                "read h < /proc/sys/kernel/hostname; echo hello from $h",
                user=args.user, cwd=Path("/tmp"),
            )  # fmt: skip
            print(out.rstrip(), flush=True)
        log = lab.run("beoctl", "node", "log", vms[0].name)
        if args.homes:
            say(f"beoctl node log {vms[0].name}: its site mounts")
            print("\n".join(ln for ln in log.splitlines() if "sitemounts" in ln), flush=True)
        say(f"beoctl node log {vms[0].name}: its boot, from stage 2's first line (12 lines)")
        print("\n".join(log.splitlines()[:12]), flush=True)
        return 0
    finally:
        lab.close()
        lab.remove_state()


def _job_in_home(lab: VmLab, user: str, nodes: int, say: Callable[[str], None]) -> None:
    """As ``user``, from a directory in their home (the nodes mount /home from the
    master): a job that reads ``input.dat`` there and writes its results beside it."""
    import pwd

    entry = pwd.getpwnam(user)
    work = Path(entry.pw_dir) / "beolaunch-demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "input.dat").write_text("".join(f"{n}\n" for n in (42, 7, 19, 3, 28)))
    for path in (work, work / "input.dat"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    script = 'sort -n input.dat > sorted-on-$(hostname).txt && echo "$(hostname): cwd $(pwd)"'
    say(f"beosub -N {nodes} as {user} from {work}: input.dat in, sorted-on-NODE.txt out, over NFS")
    print(
        lab.run(
            "beosub", "-N", str(nodes), "--", "/bin/sh", "-c", script, user=user, cwd=work
        ).rstrip()
    )
    say(f"on the master, in {work}:")
    for path in sorted(work.iterdir()):
        st = path.stat()
        owner = pwd.getpwuid(st.st_uid).pw_name
        print(f"  {oct(st.st_mode)[-3:]} {owner:<10} {st.st_size:>4} {path.name}", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
