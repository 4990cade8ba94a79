"""End to end: the minimal Unix root a job gets, on a real 2-node virtual cluster.

Real Debian programs, run as an ordinary user through ``beosub``, read the
/etc the master adds to every manifest (passwd, group and hosts generated;
time zone, CA certificates, OpenSSL's config copied) and the node's own
/etc/hostname. Programs whose other files are not shipped by the closure yet
(OpenSSL's directory, Python modules) get them with ``--include``.
"""

from __future__ import annotations

import grp
import hashlib
import ipaddress
import json
import os
import pwd
import socket
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_e2e
from tests.integration import vcluster as vc
from tests.integration.vcluster import E2E

#: slow, and skipped without root, iproute2, util-linux and useradd, as test_e2e
pytestmark = test_e2e.pytestmark

#: A zone not at /etc/localtime: present in a job only because the config ships it.
TOKYO = "/usr/share/zoneinfo/Asia/Tokyo"
SSL_INCLUDES = ("/usr/lib/ssl/openssl.cnf", "/usr/lib/ssl/cert.pem", "/usr/lib/ssl/certs")


@pytest.fixture(scope="module")
def cluster(vcluster: vc.Clusters) -> E2E:
    return vcluster.e2e(2, settings={"envroot": {"extra_master_files": [TOKYO]}})


def _run(e: E2E, *args: str) -> dict[str, list[str]]:
    """``beosub -N 2 --label ARGS`` as the cluster's user: each task's output
    lines, by ``node.task`` (the two tasks' lines may interleave)."""
    done = e.beosub("-N", "2", "--label", *args)
    assert done.returncode == 0, done.stderr + done.stdout
    tasks: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        label, _, text = line.partition(": ")
        tasks.setdefault(label, []).append(text)
    assert len(tasks) == 2, done.stdout
    return tasks


def _once(tasks: dict[str, list[str]]) -> list[str]:
    """The output of one task, when both printed the same lines."""
    first, second = tasks.values()
    assert first == second, tasks
    return first


def _last_job(e: E2E) -> int:
    return max(int(r["job"]) for r in e.json("beostat", "jobs", "--all") if r["uid"] == e.uid)


def test_passwd_and_group_name_the_user_and_nobody_else(cluster: E2E) -> None:
    me = pwd.getpwnam(cluster.user)
    lines = _once(_run(cluster, "--", "/usr/bin/getent", "passwd"))
    assert lines == [
        "root:x:0:0:root:/root:/bin/bash",
        f"{me.pw_name}:x:{me.pw_uid}:{me.pw_gid}:{me.pw_gecos}:{me.pw_dir}:{me.pw_shell}",
    ]
    assert _once(_run(cluster, "--", "/usr/bin/id", "-un")) == [cluster.user]
    groups = {grp.getgrgid(g).gr_name for g in os.getgrouplist(me.pw_name, me.pw_gid)}
    (shown,) = _once(_run(cluster, "--", "/usr/bin/id", "-Gn"))
    assert set(shown.split()) == groups


def test_a_users_own_etc_passwd_is_replaced_by_the_masters(cluster: E2E) -> None:
    # The user can read the master's full /etc/passwd and ships it: the job
    # still sees the generated one (root and the user), never other users' names.
    assert len(Path("/etc/passwd").read_text().splitlines()) > 2
    lines = _once(_run(cluster, "--include", "/etc/passwd", "--", "/bin/cat", "/etc/passwd"))
    assert [line.split(":")[0] for line in lines] == ["root", cluster.user]
    # beoacct names the /etc/passwd the job saw, on both nodes.
    body = "".join(f"{line}\n" for line in lines).encode()
    rows = json.loads(
        cluster.admin(
            "beoacct", "files", str(_last_job(cluster)), "--path", "/etc/passwd", "--json"
        )
    )
    assert {r["sha256"] for r in rows} == {hashlib.sha256(body).hexdigest()}
    assert len(rows) == 2


def _subnet_master(e: E2E) -> str:
    subnet = tomllib.loads(e.config.read_text())["cluster"]["subnet"]
    return str(ipaddress.ip_network(subnet).network_address + 1)


def test_hosts_names_the_master_and_every_node(cluster: E2E) -> None:
    nodes: list[dict[str, Any]] = cluster.json("beostat", "nodes")
    addresses = {n["name"]: n["address"] for n in nodes}
    assert set(addresses) == {"node1", "node2"} and all(addresses.values())
    lines = _once(_run(cluster, "--", "/bin/cat", "/etc/hosts"))
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert f"{_subnet_master(cluster)}\t{socket.gethostname()}" in lines
    assert lines[-2:] == [f"{addresses['node1']}\tnode1", f"{addresses['node2']}\tnode2"]
    # The C library's resolver reads it (nsswitch.conf comes from the master too).
    (found,) = _once(_run(cluster, "--", "/usr/bin/getent", "hosts", "node2"))
    assert found.split() == [addresses["node2"], "node2"]


def test_the_time_zone_comes_from_the_master(cluster: E2E) -> None:
    script = "date +%Z; TZ=Asia/Tokyo date +%Z; head -c 4 /etc/localtime; echo"
    includes = ("--include", "/usr/bin/date", "--include", "/usr/bin/head")
    lines = _once(_run(cluster, *includes, "--", "/bin/sh", "-c", script))
    here = subprocess.run(["date", "+%Z"], capture_output=True, text=True, check=True)
    # /etc/localtime's chain (a link into /usr/share/zoneinfo) and the extra zone.
    assert lines == [here.stdout.strip(), "JST", "TZif"]


def test_openssl_finds_its_config_and_the_ca_certificates(cluster: E2E) -> None:
    cnf = hashlib.sha256(Path("/etc/ssl/openssl.cnf").read_bytes()).hexdigest()
    script = (
        "openssl version -d; sha256sum < /usr/lib/ssl/openssl.cnf; "
        "openssl verify -CApath /etc/ssl/certs /etc/ssl/certs/ISRG_Root_X1.pem"
    )
    includes = [f"--include={p}" for p in (*SSL_INCLUDES, "/usr/bin/openssl", "/usr/bin/sha256sum")]
    lines = _once(_run(cluster, *includes, "--", "/bin/sh", "-c", script))
    assert lines == [
        'OPENSSLDIR: "/usr/lib/ssl"',
        f"{cnf}  -",
        "/etc/ssl/certs/ISRG_Root_X1.pem: OK",
    ]


def test_python_loads_the_ca_certificates(cluster: E2E) -> None:
    code = "import ssl; print(ssl.create_default_context().cert_store_stats())"
    # The modules `import ssl` loads, found by running it here as the user.
    probe = (
        f"{code}\nimport sys\n"
        "print('\\n'.join(sorted({m.__file__ for m in list(sys.modules.values())"
        " if getattr(m, '__file__', None)})))"
    )
    here = subprocess.run(
        ["runuser", "-u", cluster.user, "--", "/usr/bin/python3", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    stats, *modules = here.stdout.splitlines()
    assert json.loads(stats.replace("'", '"'))["x509_ca"] > 100, stats
    includes = [f"--include={p}" for p in (*SSL_INCLUDES, *modules)]
    lines = _once(_run(cluster, *includes, "--", "/usr/bin/python3", "-c", code))
    assert lines == [stats]


def test_hostname_is_the_nodes_and_etc_hostname_is_its_own_file(cluster: E2E) -> None:
    # The agents run in network namespaces of this machine: their /etc/hostname
    # is this machine's file, while the kernel's host name is the node's name.
    script = "hostname; cat /etc/hostname"
    includes = ("--include", "/bin/hostname", "--include", "/bin/cat")
    tasks = _run(cluster, *includes, "--", "/bin/sh", "-c", script)
    own = Path("/etc/hostname").read_text().strip()
    assert {label.split(".")[0]: lines for label, lines in tasks.items()} == {
        "node1": ["node1", own],
        "node2": ["node2", own],
    }
