"""bootsvc.stage3's parts (pruning, layout, kernel modules, .pyc) and launcher.node.boot
(boot.env, the enroll client against a real HTTP server, backoff, the token file)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import lzma
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bootsvc import newc, stage3
from bootsvc.errors import ModuleIndexError, Stage3BuildError
from bootsvc.mounts import SiteMount
from launcher.errors import BootEnvError, EnrollError, EnrollRefusedError
from launcher.node import boot

# --- the image's parts ---


def test_canonical_merges_usr() -> None:
    assert (
        stage3.canonical("/lib/x86_64-linux-gnu/libc.so.6") == "usr/lib/x86_64-linux-gnu/libc.so.6"
    )
    assert stage3.canonical("/lib64/ld-linux-x86-64.so.2") == "usr/lib64/ld-linux-x86-64.so.2"
    assert stage3.canonical("/usr/bin/python3.11") == "usr/bin/python3.11"
    assert stage3.canonical("/etc/python3.11/sitecustomize.py") == "etc/python3.11/sitecustomize.py"
    assert stage3.canonical("/lib") == "lib"


def _fake_stdlib(root: Path) -> Path:
    lib = root / "python3.11"
    files = [
        "os.py",
        "json/__init__.py",
        "json/__pycache__/__init__.cpython-311.pyc",
        "test/test_os.py",
        "idlelib/idle.py",
        "tkinter/__init__.py",
        "turtledemo/__main__.py",
        "ensurepip/__init__.py",
        "lib2to3/main.py",
        "pydoc_data/topics.py",
        "config-3.11-x86_64-linux-gnu/Makefile",
        "site-packages/README.txt",
        "turtle.py",
        "sqlite3/__init__.py",
        "lib-dynload/_json.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/xxlimited.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_sqlite3.cpython-311-x86_64-linux-gnu.so",
    ]
    for name in files:
        (lib / name).parent.mkdir(parents=True, exist_ok=True)
        (lib / name).write_text(name)
    (lib / "run.py").write_text("#!/usr/bin/python3\n")
    (lib / "run.py").chmod(0o755)
    (lib / "sitecustomize.py").symlink_to(root / "etc-sitecustomize.py")  # dangling
    (lib / "linked.py").symlink_to("os.py")
    return lib


def test_stdlib_pruned_and_copied(tmp_path: Path) -> None:
    lib = _fake_stdlib(tmp_path)
    tree = stage3._Tree()
    tree.add_tree(str(lib), "usr/lib/python3.11", stage3._stdlib_skip)
    paths = {p.removeprefix("usr/lib/python3.11/") for p in tree.entries}
    assert {"os.py", "json/__init__.py", "linked.py", "run.py"} <= paths
    assert "lib-dynload/_json.cpython-311-x86_64-linux-gnu.so" in paths
    for gone in (
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "config-3.11-x86_64-linux-gnu",
        "site-packages",
        "turtle.py",
        "sqlite3",
        "json/__pycache__",
        "sitecustomize.py",
        "lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/xxlimited.cpython-311-x86_64-linux-gnu.so",
        "lib-dynload/_sqlite3.cpython-311-x86_64-linux-gnu.so",
    ):
        assert not any(p == gone or p.startswith(gone + "/") for p in paths), gone
    # symlinks are followed: the image has a file; modes are 0755 or 0644
    linked = tree.entries["usr/lib/python3.11/linked.py"]
    assert stat.S_ISREG(linked.mode) and linked.data == b"os.py"
    assert stat.S_IMODE(tree.entries["usr/lib/python3.11/run.py"].mode) == 0o755
    assert stat.S_IMODE(tree.entries["usr/lib/python3.11/os.py"].mode) == 0o644
    assert tree.sources["usr/lib/python3.11/os.py"] == str(lib / "os.py")


def test_package_sources_left_out(tmp_path: Path) -> None:
    package = tmp_path / "aiohttp"
    for name in ("__init__.py", "_parser.c", "_parser.pyx", "_find.pxd", "x.h", "_parser.so"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(name)
    tree = stage3._Tree()
    tree.add_tree(str(package), "site/aiohttp", stage3._package_skip)
    assert sorted(tree.entries) == [
        "site/aiohttp",
        "site/aiohttp/__init__.py",
        "site/aiohttp/_parser.so",
    ]


def test_tree_parents_and_conflicts() -> None:
    tree = stage3._Tree()
    tree.add(newc.regular("usr/bin/python3.11", b"ELF"))
    tree.add(newc.symlink("usr/bin/python3.11", "busybox"))  # an applet never replaces a file
    assert tree.entries["usr/bin/python3.11"].data == b"ELF"
    with pytest.raises(Stage3BuildError, match="two different files"):
        tree.add(newc.regular("usr/bin/python3.11", b"other"))
    members = {m.path: m for m in tree.finish()}
    assert stat.S_ISDIR(members["usr"].mode) and stat.S_ISDIR(members["usr/bin"].mode)
    tree.add(newc.symlink("lib", "usr/lib"))
    tree.add(newc.regular("lib/x", b""))
    with pytest.raises(Stage3BuildError, match="not a directory"):
        tree.finish()


def test_third_party_skips_stdlib_and_editable_finder(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "aiohttp").mkdir(parents=True)
    (site / "fuse.py").write_text("")
    found = {
        "stdlib": "/usr/lib/python3.11",
        "dynload": ["/usr/lib/python3.11/lib-dynload"],
        "tops": {
            "os": {"file": "/usr/lib/python3.11/os.py", "path": []},
            "_json": {"file": "/usr/lib/python3.11/lib-dynload/_json.so", "path": []},
            "sys": {"file": None, "path": []},
            "aiohttp": {"file": str(site / "aiohttp/__init__.py"), "path": [str(site / "aiohttp")]},
            "fuse": {"file": str(site / "fuse.py"), "path": []},
            "__editable___beolaunch_finder": {"file": str(site / "f.py"), "path": []},
            "__main__": {"file": "/tmp/x.py", "path": []},
        },
        "dists": {"fuse": [{"name": "fusepy", "version": "3.0.1", "metadata": "Name: fusepy"}]},
    }
    paths, dists = stage3.third_party(found)
    assert paths == [str(site / "aiohttp"), str(site / "fuse.py")]
    assert list(dists) == ["fusepy"]


def test_site_dir() -> None:
    debian = [
        "/usr/local/lib/python3.11/dist-packages",
        "/usr/lib/python3/dist-packages",
        "/usr/lib/python3.11/dist-packages",
    ]
    assert stage3.site_dir(debian) == "/usr/lib/python3/dist-packages"
    assert (
        stage3.site_dir(["/usr/lib/python3.11/site-packages"])
        == "/usr/lib/python3.11/site-packages"
    )
    with pytest.raises(Stage3BuildError, match="no site directory"):
        stage3.site_dir(["/usr/local/lib/python3.11/dist-packages"])


# nfsv4 with two of its dependencies as Debian 6.1's modules.dep lists them (the one
# loaded last first), sunrpc shared with lockd.
_NFS_DEP = (
    "kernel/net/sunrpc/sunrpc.ko{c}:\n"
    "kernel/fs/lockd/lockd.ko{c}: kernel/net/sunrpc/sunrpc.ko{c}\n"
    "kernel/fs/nfs/nfsv4.ko{c}: kernel/fs/lockd/lockd.ko{c} kernel/net/sunrpc/sunrpc.ko{c}\n"
)
_NFS_ORDER = ["kernel/net/sunrpc/sunrpc.ko", "kernel/fs/lockd/lockd.ko", "kernel/fs/nfs/nfsv4.ko"]


def _module_tree(root: Path, compress: str = "") -> Path:
    tree = root / "lib/modules/6.1.0-test"
    for directory in ("kernel/fs/fuse", "kernel/lib", "kernel/net/sunrpc", "kernel/fs/lockd"):
        (tree / directory).mkdir(parents=True)
    (tree / "kernel/fs/nfs").mkdir(parents=True)
    data = b"\x7fELF fuse"
    fuse = f"kernel/fs/fuse/fuse.ko{compress}"
    packed = {"": data, ".xz": lzma.compress(data), ".gz": gzip.compress(data), ".zst": data}
    (tree / fuse).write_bytes(packed[compress])
    for rel in ("kernel/lib/helper.ko", *_NFS_ORDER):
        (tree / f"{rel}{compress}").write_bytes(packed[compress])
    (tree / "modules.alias").write_text("alias fs-fuse fuse\n")
    (tree / "modules.dep").write_text(
        f"kernel/lib/helper.ko{compress}:\n{fuse}: kernel/lib/helper.ko{compress}\n"
        + _NFS_DEP.format(c=compress)
    )
    return tree


@pytest.mark.parametrize("compress", ["", ".xz", ".gz"])
def test_kernel_modules_in_load_order(tmp_path: Path, compress: str) -> None:
    tree = _module_tree(tmp_path, compress)
    members, names = stage3.kernel_module_entries(tree)
    order = ["kernel/lib/helper.ko", "kernel/fs/fuse/fuse.ko", *_NFS_ORDER]
    assert names == order
    by_path = {m.path: m for m in members}
    base = "usr/lib/modules/6.1.0-test"
    assert by_path[f"{base}/kernel/fs/fuse/fuse.ko"].data == b"\x7fELF fuse"
    assert by_path[f"{base}/{stage3.LOAD_ORDER}"].data == "".join(f"{n}\n" for n in order).encode()


def test_kernel_modules_built_in_are_left_out(tmp_path: Path) -> None:
    tree = _module_tree(tmp_path)
    (tree / "modules.builtin").write_text("kernel/fs/fuse/fuse.ko\n")
    (tree / "modules.dep").write_text(_NFS_DEP.format(c=""))  # no line for a built-in one
    _members, names = stage3.kernel_module_entries(tree)
    assert names == _NFS_ORDER


def test_kernel_modules_refused(tmp_path: Path) -> None:
    with pytest.raises(Stage3BuildError, match="busybox insmod"):
        stage3.kernel_module_entries(_module_tree(tmp_path / "a", ".zst"))
    with pytest.raises(ModuleIndexError):
        stage3.kernel_module_entries(tmp_path / "nothing")
    tree = _module_tree(tmp_path / "b")
    (tree / "modules.dep").write_text("kernel/lib/helper.ko:\n")  # no fuse, no nfsv4 line
    with pytest.raises(ModuleIndexError, match=r"not in modules\.dep"):
        stage3.kernel_module_entries(tree)


def test_find_library(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "libfuse.so.2").write_bytes(b"")
    found = stage3.find_library("libfuse.so.2", [str(tmp_path / "a"), str(tmp_path / "b")])
    assert found == tmp_path / "b" / "libfuse.so.2"
    with pytest.raises(Stage3BuildError, match="libfuse2"):
        stage3.find_library("libfuse.so.2", [str(tmp_path / "a")])


def test_fixed_entries() -> None:
    members = {m.path: m for m in stage3._entries_fixed("#!/bin/sh\n", "/usr/lib/libfuse.so.2")}
    assert members["dev/console"].rdev == (5, 1)
    assert stat.S_IMODE(members["tmp"].mode) == 0o1777
    assert stat.S_IMODE(members["init"].mode) == 0o755
    assert members[stage3.STAGE3_ENV].data == b"FUSE_LIBRARY_PATH=/usr/lib/libfuse.so.2\n"
    assert b"root:x:0:0:" in members["etc/passwd"].data
    assert b"nobody:x:65534:" in members["etc/passwd"].data
    assert b"localhost" in members["etc/hosts"].data
    for mount_point in ("proc", "sys", "dev", "run", "var", "usr/sbin"):
        assert stat.S_ISDIR(members[mount_point].mode)


def test_shipped_init_script() -> None:
    script = stage3.init_script()
    assert script.startswith("#!/bin/sh\n")
    assert "python -m launcher.node.boot" in script
    assert "mount -t tmpfs" in script and "tmpfs /run" not in script  # stage 2 filled /run
    assert "beolaunch.load-order" in script and "FUSE_LIBRARY_PATH" in script
    assert "/sys/module/" in script  # each module unless loaded or built in
    done = subprocess.run(["sh", "-n", "-c", script], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


def test_pycs_same_bytes_and_imported_unchanged(tmp_path: Path) -> None:
    source = tmp_path / "src" / "mod.py"
    source.parent.mkdir()
    source.write_text("VALUE = {'a': [1, 2.5, 'x' * 3]}\ndef f():\n    return VALUE\n")
    (tmp_path / "src" / "bad.py").write_text("def (:\n")
    sources = {"pkg/mod.py": str(source), "pkg/bad.py": str(tmp_path / "src" / "bad.py")}
    first = stage3.compile_pycs(sys.executable, sources)
    second = stage3.compile_pycs(sys.executable, sources)
    assert first == second
    tag = sys.implementation.cache_tag
    assert list(first) == [f"pkg/__pycache__/mod.{tag}.pyc"]  # bad.py left out
    # The pyc is checked by hash, not time: an old source mtime is fine.
    root = tmp_path / "image"
    (root / "pkg/__pycache__").mkdir(parents=True)
    (root / "pkg/mod.py").write_bytes(source.read_bytes())
    (root / f"pkg/__pycache__/mod.{tag}.pyc").write_bytes(first[f"pkg/__pycache__/mod.{tag}.pyc"])
    os.utime(root / "pkg/mod.py", (0, 0))
    pyc = first[f"pkg/__pycache__/mod.{tag}.pyc"]
    assert int.from_bytes(pyc[4:8], "little") == 0b11  # hash-based, checked
    done = subprocess.run(
        [sys.executable, "-B", "-v", "-c", "import pkg.mod"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"code object from '{root}/pkg/__pycache__/mod.{tag}.pyc'" in done.stderr


# --- launcher.node.boot ---

BOOT_ENV = """BEOLAUNCH_MASTER=127.0.0.1
BEOLAUNCH_HTTP={port}
BEOLAUNCH_LOGS=5514
BEOLAUNCH_NAME=n1
BEOLAUNCH_TICKET=t-123
BEOLAUNCH_IFACE=eth0
BEOLAUNCH_ADDRESS=10.77.0.11
"""


def test_parse_boot_env() -> None:
    env = boot.parse_boot_env("# stage 2\n" + BOOT_ENV.format(port=4873))
    assert env == boot.BootEnv("127.0.0.1", 4873, 5514, "n1", "t-123", "eth0", "10.77.0.11")
    assert env.enroll_url == "http://127.0.0.1:4873/boot/enroll"
    v6 = boot.parse_boot_env(
        "BEOLAUNCH_MASTER=fd00::1\nBEOLAUNCH_HTTP=80\nBEOLAUNCH_NAME=a\nBEOLAUNCH_TICKET=t\n"
    )
    assert v6.enroll_url == "http://[fd00::1]:80/boot/enroll" and v6.logs_port is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "BEOLAUNCH_MASTER, BEOLAUNCH_HTTP, BEOLAUNCH_NAME, BEOLAUNCH_TICKET missing"),
        (
            BOOT_ENV.format(port=4873).replace("BEOLAUNCH_TICKET=t-123", "BEOLAUNCH_TICKET="),
            "BEOLAUNCH_TICKET missing",
        ),
        (BOOT_ENV.format(port="http"), "BEOLAUNCH_HTTP='http' is not a port"),
        (BOOT_ENV.format(port=70000), "is not a port"),
        (
            BOOT_ENV.format(port=4873).replace("BEOLAUNCH_LOGS=5514", "BEOLAUNCH_LOGS=x"),
            "BEOLAUNCH_LOGS",
        ),
        ("just words\n", "line 1 is not KEY=VALUE"),
    ],
)
def test_boot_env_errors(text: str, problem: str) -> None:
    with pytest.raises(BootEnvError, match=problem) as caught:
        boot.parse_boot_env(text, Path("/run/beolaunch/boot.env"))
    assert caught.value.path == Path("/run/beolaunch/boot.env")


def test_boot_env_file(tmp_path: Path) -> None:
    with pytest.raises(BootEnvError, match="cannot be read"):
        boot.read_boot_env(tmp_path / "boot.env")
    (tmp_path / "boot.env").write_text(BOOT_ENV.format(port=1))
    assert boot.read_boot_env(tmp_path / "boot.env").http_port == 1


class _Master:
    """A real HTTP server on loopback answering POST /boot/enroll from a script of
    (status, body) answers; the last one repeats. Records the requests."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, dict[str, object]]] = []
        self.ports: list[int] = []  # each request's source port
        self.sources: list[str] = []  # and address
        master = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                master.requests.append((self.path, json.loads(self.rfile.read(length))))
                master.ports.append(self.client_address[1])
                master.sources.append(self.client_address[0])
                status, body = master.answers[min(len(master.requests), len(master.answers)) - 1]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def env(self) -> boot.BootEnv:
        return boot.parse_boot_env(BOOT_ENV.format(port=self.port))


@pytest.fixture
def master() -> Iterator[_Master]:
    server = _Master([])
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


OK = json.dumps(
    {"name": "n1", "token": "tok", "control_url": "ws://127.0.0.1:4872/node", "peer_port": 4880}
).encode()


def test_enroll_ok(master: _Master) -> None:
    master.answers = [(200, OK)]
    got = boot.enroll(master.env())
    assert got == boot.Enrollment("n1", "tok", "ws://127.0.0.1:4872/node", 4880)
    assert master.requests == [("/boot/enroll", {"ticket": "t-123"})]


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("binding a privileged source port needs root")


def test_enroll_answer_with_mounts(master: _Master) -> None:
    answer = json.loads(OK)
    answer["mounts"] = [
        {"source": "10.0.0.1:/home", "target": "/home", "type": "nfs4", "options": "vers=4.1"},
        {"source": "10.0.0.1:/etc", "target": "/etc"},  # the node's own: refused
    ]
    master.answers = [(200, json.dumps(answer).encode())]
    got = boot.enroll(master.env())
    assert got.mounts == (SiteMount("10.0.0.1:/home", "/home", "nfs4", "vers=4.1"),)
    (line,) = got.refused_mounts
    assert line.startswith("mount refused: key 'mounts[1].target'")


def test_enroll_comes_from_a_privileged_source_port(master: _Master) -> None:
    # The master takes a ticket only from a port below 1024: only root on the node.
    _root()
    master.answers = [(200, OK)]
    boot.enroll(master.env())
    boot.enroll(master.env())
    assert len(master.ports) == 2 and all(512 <= port < 1024 for port in master.ports)


def test_enroll_comes_from_the_nodes_leased_address(master: _Master) -> None:
    # BEOLAUNCH_ADDRESS is stage 2's lease, the address the master gives tickets to.
    _root()
    master.answers = [(200, OK)]
    env = master.env()
    boot.enroll(dataclasses.replace(env, address="127.0.0.2"))
    boot.enroll(env)  # 10.77.0.11 is not this machine's: the route's choice, 127.0.0.1
    assert master.sources == ["127.0.0.2", "127.0.0.1"]


def test_enroll_skips_a_privileged_port_in_use(master: _Master) -> None:
    _root()
    master.answers = [(200, OK)]
    with socket.socket() as busy:
        for port in range(1023, 511, -1):  # a free one, held while enrolling
            try:
                busy.bind(("", port))
                break
            except OSError:
                continue
        busy.listen()
        held = busy.getsockname()[1]
        boot.enroll(master.env(), ports=[held, held - 1])
    assert master.ports == [held - 1]


def test_enroll_ports_are_privileged_and_distinct() -> None:
    ports = boot.enroll_ports()
    assert len(ports) == len(set(ports)) == boot.ENROLL_PORT_TRIES
    assert all(512 <= port < 1024 for port in ports)


def test_enroll_not_as_root_says_it_must_be() -> None:
    _root()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops to nobody and tries
        os.close(read)
        message = b"no error"
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            boot.privileged_socket("http://127.0.0.1:9/boot/enroll", "127.0.0.1", 9, 1, [700])
        except EnrollError as exc:
            message = str(exc).encode()
        finally:
            os.write(write, message)
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    assert "cannot bind source port 700" in said and "enroll must run as root" in said


def test_enroll_peer_port_zero_means_none(master: _Master) -> None:
    master.answers = [(200, OK.replace(b'"peer_port": 4880', b'"peer_port": 0'))]
    assert boot.enroll(master.env()).peer_port is None  # [peers] port = 0: serve no peers


def test_enroll_refused(master: _Master) -> None:
    master.answers = [(403, b'{"error": "ticket expired"}')]
    with pytest.raises(EnrollRefusedError, match="ticket refused: ticket expired") as caught:
        boot.enroll(master.env())
    assert caught.value.status == 403


@pytest.mark.parametrize(
    ("answer", "status", "problem"),
    [
        ((503, b"{}"), None, "HTTP 503"),
        ((200, b"not json"), 200, "not JSON"),
        ((200, b'{"name": "n1"}'), 200, "lacks name/token/control_url"),
        ((200, b'{"name": "n1", "token": "t", "control_url": "http://x"}'), None, "not ws://"),
        ((404, b"{}"), 404, "HTTP 404"),
    ],
)
def test_enroll_bad_answers(
    master: _Master, answer: tuple[int, bytes], status: int | None, problem: str
) -> None:
    master.answers = [answer]
    with pytest.raises(EnrollError, match=problem) as caught:
        boot.enroll(master.env())
    assert not isinstance(caught.value, EnrollRefusedError)
    assert caught.value.status == status


def test_enroll_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connect is refused
        env = boot.parse_boot_env(BOOT_ENV.format(port=port))
        with pytest.raises(EnrollError, match="no answer") as caught:
            boot.enroll(env, timeout=5)
    assert caught.value.status is None


def test_enroll_until_done_backs_off(master: _Master, caplog: pytest.LogCaptureFixture) -> None:
    master.answers = [(503, b"{}")] * 7 + [(403, b'{"error": "used"}'), (200, OK)]
    slept: list[float] = []
    got = boot.enroll_until_done(master.env(), sleep=slept.append, refused_retry_s=300)
    assert got.token == "tok"
    assert slept == [1, 2, 4, 8, 16, 30, 30, 300]
    assert len(master.requests) == 9
    refused = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(refused) == 1 and "needs a reboot" in refused[0].getMessage()


def test_token_and_enrollment_saved(tmp_path: Path) -> None:
    paths = boot.NodePaths(
        token=tmp_path / "run/token", enrollment=tmp_path / "run/enrollment.json"
    )
    assert boot.load_enrollment(paths) is None
    enrollment = boot.Enrollment("n1", "secret", "ws://m:1/node", None)
    boot.save_enrollment(paths, enrollment)
    assert stat.S_IMODE(paths.token.stat().st_mode) == 0o600
    assert paths.token.read_text() == "secret\n"
    assert "secret" not in paths.enrollment.read_text()
    assert boot.load_enrollment(paths) == enrollment


def test_memory_total(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemFree: 10 kB\nMemTotal:        2048 kB\n")
    assert boot.memory_total(meminfo) == 2048 * 1024
    meminfo.write_text("MemFree: 10 kB\n")
    with pytest.raises(BootEnvError, match="no MemTotal"):
        boot.memory_total(meminfo)


def test_agent_options() -> None:
    paths = boot.NodePaths()
    options = boot.agent_options(
        boot.Enrollment("n1", "t", "ws://m:4872/node", 4880), paths, 1 << 30
    )
    assert (options.master_url, options.name, options.token) == ("ws://m:4872/node", "n1", "t")
    assert options.cache_dir == Path("/var/cache/beolaunch/cache")
    assert options.roots_dir == Path("/var/lib/beolaunch/roots")
    assert options.local_socket == Path("/run/beolaunch/agent.sock")
    assert (options.peer_port, options.cache_budget) == (4880, 1 << 30)


def test_main_reports_a_bad_boot_env(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "boot.env").write_text("BEOLAUNCH_MASTER=1.2.3.4\n")
    argv = ["--boot-env", str(tmp_path / "boot.env"), "--syslog", str(tmp_path / "no-log")]
    assert boot.main(argv) == 2
    assert "BEOLAUNCH_HTTP, BEOLAUNCH_NAME, BEOLAUNCH_TICKET missing" in caplog.text
