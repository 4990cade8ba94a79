"""The master's boot services, run as a real master process with a real state dir.

Without ``[boot]`` the boot HTTP service does not listen at all (any caller
could otherwise make pending nodes and fetch tickets on every interface).

With ``[boot]`` the master runs in a network namespace of its own. In
``s9be-*`` (SQLite) its cluster interface is ``be0`` (a veth pair's end) at 10.231.12.1/24
that also holds the addresses the test's callers send from (a thread of the
test enters the namespace, :mod:`tests.integration.netns`): an unknown MAC
asking from a pool address becomes pending, ``beoctl node accept`` gives it
10.231.12.2, its next ask from the pool address is told to renew its lease, the
one from 10.231.12.2 boots images stored by launcher.state.bootimages (each comes back
with its sha256), and the node's own enroll client (root, a privileged port,
its address) trades the ticket once for a token the control WebSocket takes.
In ``s9mb-*`` (10.231.9.0/24 on a veth pair whose far end is in a client
namespace) dnsmasq and TFTP answer: curl in the client namespace fetches
``boot.ipxe`` over TFTP, busybox udhcpc gets its lease and boot file, and
accepting a node rewrites dnsmasq's hosts file.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from launcher.initialize import initialize
from launcher.master.boothttp import boot_ipxe
from launcher.node import boot as node_boot
from launcher.state.bootimages import store_image
from launcher.state.db import transaction
from launcher.wire import Hello, encode
from tests.integration.bootmaster import Master, node_of, start_master, stop_master
from tests.integration.netns import call_in_netns, dhcp_lease
from tests.integration.vcluster import Poll

MAC = "52:54:00:31:09:07"
HYPHENS = MAC.replace(":", "-")
poll = Poll(seconds=20)
#: The s9be-* boot network: the master, a pool address and the static one n7 is given.
BE = "10.231.12"
BE_POOL = f"{BE}.150"
BE_STATIC = f"{BE}.2"


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir made by beoctl init once; each master gets a copy (init migrates: slow)."""
    state = tmp_path_factory.mktemp("template") / "state"
    initialize(state)
    return state


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def master(initialized: Path, request: pytest.FixtureRequest) -> Iterator[Master]:
    """A master without [boot], on 127.0.0.1."""
    url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    top = Path(tempfile.mkdtemp(prefix="beolaunch-boothttp-"))
    try:
        m = start_master(initialized, top, None, database_url=url)
        try:
            yield m
        finally:
            stop_master(m)
        assert m.proc.returncode == 0, m.log.read_text()
    finally:
        shutil.rmtree(top)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class BootMaster:
    """A master with [boot] (pool mode) in namespace ``ns``; calls from inside it."""

    def __init__(self, m: Master, ns: str) -> None:
        self.m = m
        self.ns = ns

    def url(self, path: str) -> str:
        return self.m.url(path, host=f"{BE}.1")

    def get(self, path: str, source: str) -> tuple[int, bytes, dict[str, str]]:
        return call_in_netns(self.ns, lambda: _get(self.url(path), source))

    def script(self, source: str) -> str:
        status, body, _ = self.get(f"/boot/{HYPHENS}.ipxe", source)
        assert status == 200, body
        return body.decode()

    def post(self, path: str, body: object, source: str) -> tuple[int, dict[str, Any]]:
        return call_in_netns(self.ns, lambda: _post(self.url(path), body, source))


@pytest.fixture
def boot_master(initialized: Path) -> Iterator[BootMaster]:
    """A master with [boot] in a namespace whose be0 holds 10.231.12.1 (the master),
    a pool address and n7's static address (the callers)."""
    _require("dnsmasq", "ip")
    ns = f"s9be-{secrets.token_hex(2)}"
    top = Path(tempfile.mkdtemp(prefix="beolaunch-bootns-"))
    boot = {
        "interface": "be0",
        "network": f"{BE}.0/24",
        "master_address": f"{BE}.1",
        "mode": "pool",
        "pool_first": f"{BE}.100",
        "pool_last": f"{BE}.199",
        "ipxe_dir": str(top),  # no iPXE binaries: only HTTP here
    }
    try:
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        # A veth pair with both ends inside (this kernel has no dummy driver): be0 is
        # the cluster interface, be1 only gives it a carrier.
        _run("ip", "-n", ns, "link", "add", "be0", "type", "veth", "peer", "be1")
        for address in (f"{BE}.1/24", f"{BE_POOL}/24", f"{BE_STATIC}/24"):
            _run("ip", "-n", ns, "addr", "add", address, "dev", "be0")
        _run("ip", "-n", ns, "link", "set", "be1", "up")
        _run("ip", "-n", ns, "link", "set", "be0", "up")
        m = start_master(initialized, top, boot, prefix=("ip", "netns", "exec", ns))
        try:
            yield BootMaster(m, ns)
        finally:
            stop_master(m)
        assert m.proc.returncode == 0, m.log.read_text()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(top)


def _opener(source: str) -> urllib.request.OpenerDirector:
    """urllib sending from ``source`` (an address of the namespace's be0; "": any)."""

    def connection(host: str, timeout: float = 20, **_: Any) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(host, timeout=timeout, source_address=(source, 0))

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(connection, req)  # type: ignore[arg-type]

    return urllib.request.build_opener(Handler)


def _get(url: str, source: str = "") -> tuple[int, bytes, dict[str, str]]:
    try:
        with _opener(source).open(url, timeout=20) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _post(url: str, body: object, source: str = "") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with _opener(source).open(request, timeout=20) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _store_images(m: Master) -> dict[str, tuple[str, bytes]]:
    """A kernel, stage 2 and stage 3 of random bytes (the kernel over several 1 MiB chunks)."""
    stored = {}
    engine = m.engine()
    try:
        with transaction(engine) as session:
            for kind, size in (("kernel", (3 << 20) + 17), ("stage2", 4096), ("stage3", 70000)):
                data = secrets.token_bytes(size)
                image = store_image(
                    session, m.config.state_dir, data, kind=kind, name=f"test-{kind}", built_from={}
                )
                stored[kind] = (image.sha256, data)
    finally:
        engine.dispose()
    return stored


def _script_lines(text: str) -> dict[str, str]:
    """The first word of each script line -> the rest."""
    return {line.split(" ", 1)[0]: line.partition(" ")[2] for line in text.splitlines()}


def _kernel_args(script: str) -> dict[str, str]:
    kernel = _script_lines(script)["kernel"].split()
    return dict(arg.split("=", 1) for arg in kernel[1:] if "=" in arg)


def test_without_a_boot_table_the_boot_service_does_not_listen(master: Master) -> None:
    port = master.config.service("boot_http").port
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
    assert "boot HTTP service off: the config has no [boot] table" in master.log.read_text()


def test_unknown_mac_to_enrolled_node(
    boot_master: BootMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    bm, master = boot_master, boot_master.m
    waiting = bm.script(BE_POOL)
    assert waiting.startswith("#!ipxe\n")
    assert f"beoctl node accept {MAC}" in waiting
    assert ":retry\nsleep 5\nchain " in waiting and "|| goto retry" in waiting
    node = node_of(master, mac=MAC)
    assert node is not None and (node.state, node.name, node.address) == ("pending", None, BE_POOL)

    capsys.readouterr()
    assert master.beoctl("node", "list", "--pending", "--json") == 0
    pending = json.loads(capsys.readouterr().out)
    assert [(p["mac"], p["address"]) for p in pending] == [(MAC, BE_POOL)]
    assert pending[0]["first_seen"]

    # Accepted but nothing to boot yet: the waiting script with the reason, not a 500.
    assert master.beoctl("node", "accept", HYPHENS.upper(), "--name", "n7") == 0
    assert f"accepted 52:54:00:31:09:07 as node n7 at {BE_STATIC}" in capsys.readouterr().out
    # Still on its pool lease: no ticket there, and iPXE is told to ask DHCP again.
    renew = bm.script(BE_POOL)
    assert f"node n7 asked from {BE_POOL}, not from its address {BE_STATIC}" in renew
    assert "dhcp || goto retry" in renew and "beolaunch.ticket" not in renew
    assert "cannot boot: no kernel or stage2 or stage3 image" in bm.script(BE_STATIC)
    assert "cannot boot" in bm.script(BE_STATIC)  # iPXE's retry
    capsys.readouterr()
    assert master.beoctl("node", "log", "n7", "--level", "warning", "--json") == 0
    warned = [r["message"] for r in json.loads(capsys.readouterr().out)]
    assert warned == [
        f"node n7: no boot ticket for {BE_POOL}: node n7 asked from {BE_POOL}, not from its "
        f"address {BE_STATIC}: renewing its DHCP lease",
        "node n7 cannot boot: no kernel or stage2 or stage3 image",
    ]  # each once

    images = _store_images(master)
    script = bm.script(BE_STATIC)
    lines = _script_lines(script)
    base = bm.url("/boot/images")
    assert lines["kernel"].startswith(f"{base}/{images['kernel'][0]} initrd=stage2 ")
    assert lines["initrd"] == f"--name stage2 {base}/{images['stage2'][0]}"
    assert "boot" in lines
    args = _kernel_args(script)
    ports = master.config.services
    assert args["beolaunch.master"] == f"{BE}.1"
    assert args["beolaunch.http"] == str(ports["boot_http"].port)
    assert args["beolaunch.logs"] == str(ports["logs"].port)
    assert args["beolaunch.name"] == "n7"
    assert args["beolaunch.stage3"] == images["stage3"][0]
    ticket = args["beolaunch.ticket"]
    node = node_of(master, name="n7")
    assert node is not None and node.state == "booting"

    for sha256, data in images.values():
        status, body, headers = bm.get(f"/boot/images/{sha256}", BE_POOL)  # public
        assert status == 200
        assert int(headers["Content-Length"]) == len(data)
        assert hashlib.sha256(body).hexdigest() == sha256
    assert bm.get(f"/boot/images/{'0' * 64}", BE_STATIC)[0] == 404
    assert bm.get("/boot/images/not-a-sha", BE_STATIC)[0] == 404
    kernel_sha = images["kernel"][0]
    poll(
        "the kernel transfer's log line",
        lambda: (
            f"image={kernel_sha} bytes={len(images['kernel'][1])} seconds="
            in master.log.read_text()
        ),
    )

    # An ephemeral source port (no root) is refused; the node's own client (root) is not.
    status, refused = bm.post("/boot/enroll", {"ticket": ticket}, BE_STATIC)
    assert status == 403 and "privileged source port" in refused["error"]
    env = node_boot.BootEnv(
        f"{BE}.1", ports["boot_http"].port, ports["logs"].port, "n7", ticket, None, BE_STATIC
    )
    enrolled = call_in_netns(bm.ns, lambda: node_boot.enroll(env))
    control = ports["control"].port
    assert enrolled.name == "n7"
    assert enrolled.control_url == f"ws://{BE}.1:{control}/node"
    assert enrolled.peer_port == master.config.peers.port

    async def hello() -> None:
        connector = aiohttp.TCPConnector(local_addr=(BE_STATIC, 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            ws = await session.ws_connect(
                enrolled.control_url, headers={"Authorization": f"Bearer {enrolled.token}"}
            )
            hardware = {"cpus": 2, "memory": 1 << 30, "nics": ["eth0"]}
            cache = {"bytes_used": 0, "budget": 1 << 30, "objects": 0, "pinned": 0}
            await ws.send_str(encode(Hello("n7", hardware, cache)))
            poll("n7 up", lambda: (n := node_of(master, name="n7")) is not None and n.state == "up")
            # Connected: its own address gets no ticket (a job on n7 asking).
            status, body, _ = await asyncio.to_thread(
                _get, bm.url(f"/boot/{HYPHENS}.ipxe"), BE_STATIC
            )
            assert status == 200 and b"node n7 is connected" in body
            await ws.close()

    call_in_netns(bm.ns, lambda: asyncio.run(hello()))

    with pytest.raises(node_boot.EnrollRefusedError, match="already used"):
        call_in_netns(bm.ns, lambda: node_boot.enroll(env))
    assert bm.post("/boot/enroll", {"nope": 1}, BE_STATIC)[0] == 400

    # Its syslog lines (matched by address: the agent said hello from BE_STATIC).
    def syslog() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((BE_STATIC, 0))
            udp.sendto(b"<11>stage2: hello from n7", (f"{BE}.1", ports["logs"].port))

    call_in_netns(bm.ns, syslog)
    capsys.readouterr()

    def logged() -> list[dict[str, Any]]:
        assert master.beoctl("node", "log", "n7", "--json") == 0
        rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
        return rows if any("hello from n7" in r["message"] for r in rows) else []

    rows = poll("the syslog line in beoctl node log", logged)
    messages = [r["message"] for r in rows]
    for part in ("is pending", "accepted as n7", "booting from", "enrolled", "hello from n7"):
        assert any(part in m for m in messages), (part, messages)
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert master.beoctl("node", "log", "n7", "--level", "error", "-n", "1") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "error" in out[0] and "hello from n7" in out[0]
    assert master.beoctl("node", "log", "n7", "--since", "1h", "-n", "2", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_accept_refusals_and_bad_requests(
    boot_master: BootMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    bm, master = boot_master, boot_master.m
    assert bm.get("/boot/not-a-mac.ipxe", BE_POOL)[0] == 400
    assert bm.get("/boot/boot.efi", BE_POOL)[0] == 404
    assert master.beoctl("node", "accept", MAC) == 1
    assert "no node has booted with this MAC" in capsys.readouterr().err
    assert bm.get(f"/boot/{HYPHENS}.ipxe", BE_POOL)[0] == 200
    assert master.beoctl("node", "add", "n1") == 0
    assert master.beoctl("node", "accept", MAC, "--name", "n1") == 1
    assert "the name n1 is taken" in capsys.readouterr().err
    assert master.beoctl("node", "accept", MAC) == 0
    assert "as node n2" in capsys.readouterr().out  # n1 taken: the next free nN
    assert master.beoctl("node", "accept", MAC) == 1
    assert "already accepted as node n2" in capsys.readouterr().err
    assert master.beoctl("node", "log", "nobody") == 2


def test_a_pending_mac_removed_is_pending_again_at_its_next_boot(
    boot_master: BootMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    bm, master = boot_master, boot_master.m
    assert bm.get(f"/boot/{HYPHENS}.ipxe", BE_POOL)[0] == 200
    capsys.readouterr()
    assert master.beoctl("node", "remove", HYPHENS) == 0
    assert capsys.readouterr().out.strip() == f"removed node {HYPHENS} ({MAC}, pending)"
    assert master.beoctl("node", "list", "--pending", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert master.beoctl("node", "remove", MAC) == 2
    assert f"no node named '{MAC}' or with that MAC" in capsys.readouterr().err
    assert bm.get(f"/boot/{HYPHENS}.ipxe", BE_POOL)[0] == 200  # it boots again
    assert master.beoctl("node", "list", "--pending", "--json") == 0
    assert [p["mac"] for p in json.loads(capsys.readouterr().out)] == [MAC]


# --- with [boot]: dnsmasq and TFTP in a namespace -------------------------------------

NET = "10.231.9"


def _require(*programs: str) -> None:
    path = os.environ["PATH"] + ":/usr/sbin:/sbin"
    missing = [p for p in programs if not shutil.which(p, path=path)]
    reason = f"needs {', '.join(missing)} (apt-get install dnsmasq curl busybox-static)"
    if os.geteuid() != 0:
        reason, missing = "needs root for network namespaces", ["root"]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    """A master namespace with mb0 (10.231.9.1/24) and a client one with its peer mb1."""
    _require("dnsmasq", "busybox", "curl", "ip")
    tag = secrets.token_hex(2)
    server, client = f"s9mb-{tag}-s", f"s9mb-{tag}-c"

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    try:
        run("ip", "netns", "add", server)
        run("ip", "netns", "add", client)
        run("ip", "-n", server, "link", "set", "lo", "up")
        run(
            "ip", "-n", server, "link", "add", "mb0", "type", "veth", "peer", "mb1", "netns", client
        )
        run("ip", "-n", server, "addr", "add", f"{NET}.1/24", "dev", "mb0")
        run("ip", "-n", server, "link", "set", "mb0", "up")
        run("ip", "-n", client, "link", "set", "lo", "up")
        run("ip", "-n", client, "link", "set", "mb1", "address", MAC, "up")
        # An address of its own outside the pool, for curl (udhcpc's script sets none).
        run("ip", "-n", client, "addr", "add", f"{NET}.250/24", "dev", "mb1")
        yield server, client
    finally:
        for name in (server, client):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _curl(client: str, *args: str) -> bytes:
    """curl in the client namespace: what it fetched."""
    argv = ["ip", "netns", "exec", client, "curl", "-sS", "--max-time", "20", *args]
    return subprocess.run(argv, capture_output=True, check=True).stdout


@pytest.mark.slow  # starts dnsmasq and waits for its leases: 7.5 s
def test_boot_table_runs_dnsmasq_and_tftp(
    initialized: Path, netns: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    server, client = netns
    top = Path(tempfile.mkdtemp(prefix="beolaunch-boottftp-"))
    boot = {
        "interface": "mb0",
        "network": f"{NET}.0/24",
        "master_address": f"{NET}.1",
        "mode": "pool",
        "pool_first": f"{NET}.100",
        "pool_last": f"{NET}.199",
        "ipxe_dir": "/usr/lib/ipxe",
        "ra": True,
    }
    try:
        m = start_master(initialized, top, boot, prefix=("ip", "netns", "exec", server))
        try:
            state = m.config.state_dir
            http_port = m.config.service("boot_http").port
            tftp_port = m.config.service("tftp").port
            expected = boot_ipxe(f"{NET}.1", http_port)
            assert f"chain http://{NET}.1:{http_port}/boot/${{mac:hexhyp}}.ipxe || goto" in expected
            assert (state / "boot" / "tftp" / "boot.ipxe").read_text() == expected
            dhcp_log = state / "boot" / "dhcp" / "dnsmasq.log"
            poll("dnsmasq started", lambda: "started" in dhcp_log.read_text())

            # TFTP from the client's side of the link, at the blksize iPXE uses.
            fetched = _curl(
                client, "--tftp-blksize", "1428", f"tftp://{NET}.1:{tftp_port}/boot.ipxe"
            )
            assert fetched.decode() == expected
            if Path("/usr/lib/ipxe/undionly.kpxe").exists():
                kpxe = _curl(
                    client, "--tftp-blksize", "1428", f"tftp://{NET}.1:{tftp_port}/undionly.kpxe"
                )
                assert kpxe == Path("/usr/lib/ipxe/undionly.kpxe").read_bytes()
            poll("the TFTP log line", lambda: "file=boot.ipxe" in m.log.read_text())
            assert "router advertisements on mb0" in m.log.read_text()
            # The boot HTTP service is on the cluster interface's address only.
            assert f"boot HTTP service on {NET}.1:{http_port}" in m.log.read_text()
            local = subprocess.run(
                ["ip", "netns", "exec", server, "curl", "-sS", "--max-time", "5",
                 f"http://127.0.0.1:{http_port}/boot/{HYPHENS}.ipxe"],
                capture_output=True, check=False,
            )  # fmt: skip
            assert local.returncode == 7, local  # curl: could not connect

            # Unknown MAC: a pool address and boot.ipxe; its script makes it pending.
            ipxe = dhcp_lease(client, "mb1", top, "-x", "77:69505845")  # user class "iPXE"
            assert ipxe["boot_file"] == "boot.ipxe" and ipxe["siaddr"] == f"{NET}.1"
            assert 100 <= int(ipxe["ip"].rsplit(".", 1)[1]) <= 199
            script = _curl(client, f"http://{NET}.1:{http_port}/boot/{HYPHENS}.ipxe").decode()
            assert f"beoctl node accept {MAC}" in script
            node = node_of(m, mac=MAC)
            assert node is not None and node.state == "pending"

            # Accepting it gives a static address outside the pool; the master rewrites
            # dnsmasq's hosts file and dnsmasq leases that address from then on.
            hosts = state / "boot" / "dhcp" / "dnsmasq.hosts"
            assert hosts.read_text() == ""
            reads = dhcp_log.read_text().count("dnsmasq.hosts")
            assert m.beoctl("node", "accept", MAC) == 0
            assert f"as node n1 at {NET}.2" in capsys.readouterr().out
            poll("the hosts file", lambda: hosts.read_text() == f"{MAC},n1,{NET}.2\n")
            poll(
                "dnsmasq re-read it (SIGHUP)",
                lambda: dhcp_log.read_text().count("dnsmasq.hosts") > reads,
            )
            assert dhcp_lease(client, "mb1", top)["ip"] == f"{NET}.2"
            assert dhcp_lease(client, "mb1", top, "-x", "77:69505845")["ip"] == f"{NET}.2"

            # A node added by MAC in advance gets the next static address and a lease line.
            assert m.beoctl("node", "add", "n5", "--mac", "52:54:00:31:09:08") == 0
            assert f"added node n5 (52:54:00:31:09:08, {NET}.3)" in capsys.readouterr().out
            poll(
                "n5 in the hosts file",
                lambda: f"52:54:00:31:09:08,n5,{NET}.3\n" in hosts.read_text(),
            )
        finally:
            stop_master(m)
        assert m.proc.returncode == 0, m.log.read_text()
        left = subprocess.run(["ip", "netns", "pids", server], capture_output=True, text=True)
        assert left.stdout.split() == []  # dnsmasq and the master both gone
    finally:
        shutil.rmtree(top)
