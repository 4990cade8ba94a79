"""beoctl init --isolated: free subnet, free ports, short unique names, idempotent."""

from __future__ import annotations

import random
import shutil
import socket
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from launcher import config as cfg
from launcher.cli import beoctl
from launcher.cli.beoctl.cluster import configured_layout
from launcher.cluster.spec import IFNAMSIZ
from launcher.errors import IsolationError
from launcher.initialize import initialize
from launcher.isolation import (
    LOWEST_PORT,
    MAX_TAG,
    SUBNET_POOL,
    free_ports,
    free_subnet,
    init_isolated,
    layout_of,
    local_services,
    names_in_use,
)

needs_ip = pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip")

IP_ADDR = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 172.17.0.2/16 brd 172.17.255.255 scope global eth0\\       valid_lft forever
7: beo-x    inet 10.100.0.1/16 scope global beo-x\\       valid_lft forever preferred_lft forever
8: tun0    inet 10.96.0.5/32 scope global tun0\\       valid_lft forever preferred_lft forever
"""


def _lines(nets: list[IPv4Network]) -> str:
    return "".join(
        f"{i}: br{i}    inet {n[1]}/{n.prefixlen} scope global\n" for i, n in enumerate(nets)
    )


def test_free_subnet_avoids_every_address_in_use() -> None:
    taken = [IPv4Network("10.100.0.0/16"), IPv4Network("10.96.0.5/32")]
    for seed in range(200):
        net = IPv4Network(free_subnet(IP_ADDR, random.Random(seed)))
        assert net.prefixlen == 24
        assert net.subnet_of(SUBNET_POOL)
        assert not any(net.overlaps(t) for t in taken)


def test_free_subnet_finds_the_last_free_one() -> None:
    all24 = list(SUBNET_POOL.subnets(new_prefix=24))
    left = all24[4711]
    out = _lines([n for n in all24 if n != left])
    assert free_subnet(out, random.Random(1)) == str(left)


def test_free_subnet_when_all_taken_says_so() -> None:
    with pytest.raises(IsolationError) as err:
        free_subnet("2: eth0    inet 10.1.2.3/8 brd 10.255.255.255 scope global eth0\n")
    assert err.value.value == str(SUBNET_POOL)


def test_free_ports_are_distinct_and_bindable() -> None:
    kinds = [socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_STREAM, socket.SOCK_DGRAM]
    ports = free_ports(kinds)
    assert len(set(ports)) == len(kinds)
    for kind, port in zip(kinds, ports, strict=True):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("0.0.0.0", port))  # raises when the port were not free
    # never one the kernel may give an outgoing connection meanwhile
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(LOWEST_PORT <= p < low for p in ports), ports


def test_local_services_give_every_service_its_own_port_on_the_address() -> None:
    tables = local_services("127.0.0.1")
    assert sorted(tables) == sorted(cfg.SERVICES)
    ports = [t["port"] for t in tables.values()]
    assert len(set(ports)) == len(ports), tables
    assert {t["address"] for t in tables.values()} == {"127.0.0.1"}


def test_names_of_the_longest_tag_fit_the_kernel_limit() -> None:
    layout = layout_of("z" * MAX_TAG, "10.96.0.0/24")
    last = layout.max_nodes()
    layout.check(last)  # raises ClusterSpecError for a name too long
    assert len(layout.bridge) <= IFNAMSIZ
    assert len(layout.host_veth(last)) <= IFNAMSIZ


@pytest.mark.parametrize("tag", ["", "z" * (MAX_TAG + 1), "Demo", "a-b", "a b"])
def test_bad_tags_are_refused(tag: str) -> None:
    with pytest.raises(IsolationError) as err:
        layout_of(tag, "10.96.0.0/24")
    assert err.value.value == tag


def test_two_tags_never_share_a_name() -> None:
    # a tag ending like a veth suffix still cannot name another tag's interfaces
    a, b = layout_of("a", "10.96.0.0/24"), layout_of("a1", "10.96.1.0/24")
    names_a = {a.bridge, *(a.host_veth(i) for i in range(1, 245))}
    names_b = {b.bridge, *(b.host_veth(i) for i in range(1, 245))}
    assert not names_a & names_b
    assert b.veth_index(a.bridge) is None and a.veth_index(b.bridge) is None


def test_names_in_use_finds_links_and_namespaces() -> None:
    layout = layout_of("demo", "10.96.0.0/24")
    links = (
        "1: lo: <LOOPBACK,UP> mtu 65536 state UNKNOWN\n"
        "9: beo-demo: <BROADCAST,MULTICAST> mtu 1500 state DOWN\n"
        "10: beo-demo-3h@if2: <BROADCAST> mtu 1500 master beo-demo\n"
        "11: beo-demo1-3h@if2: <BROADCAST> mtu 1500\n"
    )
    found = names_in_use(layout, links, ["beo-demo-node3", "beo-demo1-node1"])
    assert found == ["beo-demo", "beo-demo-3h", "beo-demo-node3"]
    assert names_in_use(layout, "1: lo: <LOOPBACK>\n", []) == []


@needs_ip
def test_isolated_init_writes_its_own_config(tmp_path: Path) -> None:
    iso = init_isolated(tmp_path / "beo", "t1")
    config = cfg.load(str(iso.config))
    assert iso.bridge == "beo-t1" and iso.netns_prefix == "beo-t1-node"
    assert configured_layout(config) == iso.layout
    assert {n: a.port for n, a in config.services.items()} == dict(iso.services)
    assert config.services["control"].port != cfg.DEFAULT_PORTS["control"]
    assert config.peers.port == iso.peer_port != cfg.DEFAULT_PEER_PORT
    slurm = config.slurm
    assert iso.slurm is not None
    assert (slurm.cluster_name, slurm.slurmctld_port, slurm.slurmd_port) == (
        "beot1",
        iso.slurm.slurmctld_port,
        iso.slurm.slurmd_port,
    )
    ports = [*iso.services.values(), iso.peer_port, slurm.slurmctld_port, slurm.slurmd_port]
    assert len(set(ports)) == len(ports)
    assert len(iso.created) == 4


@needs_ip
def test_second_isolated_init_leaves_the_state_dir_alone(tmp_path: Path) -> None:
    first = init_isolated(tmp_path / "beo")
    text = first.config.read_bytes()
    again = init_isolated(tmp_path / "beo")
    assert again.created == []
    assert first.config.read_bytes() == text
    assert (again.tag, again.layout, again.services) == (first.tag, first.layout, first.services)
    with pytest.raises(IsolationError) as err:
        init_isolated(tmp_path / "beo", "other")
    assert err.value.value == "other"
    assert first.config.read_bytes() == text


@needs_ip
def test_isolated_init_of_a_plain_state_dir_conflicts(tmp_path: Path) -> None:
    initialize(tmp_path / "beo")
    with pytest.raises(IsolationError) as err:
        init_isolated(tmp_path / "beo")
    assert err.value.what == "state dir"


@needs_ip
def test_two_isolated_state_dirs_get_different_names(tmp_path: Path) -> None:
    a, b = init_isolated(tmp_path / "a"), init_isolated(tmp_path / "b")
    # names differ by construction; ports and subnets are random picks, not compared
    assert a.tag != b.tag and a.bridge != b.bridge and a.netns_prefix != b.netns_prefix


@needs_ip
def test_beoctl_init_isolated_says_what_it_chose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        beoctl.main(["init", "--state-dir", str(tmp_path / "s"), "--isolated", "--tag", "cli1"])
        == 0
    )
    out = capsys.readouterr().out
    assert "bridge beo-cli1" in out and "namespaces beo-cli1-nodeN" in out
    assert beoctl.main(["init", "--state-dir", str(tmp_path / "s"), "--isolated"]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert beoctl.main(["init", "--state-dir", str(tmp_path / "p"), "--tag", "x"]) == 2
    assert (
        beoctl.main(["init", "--state-dir", str(tmp_path / "n"), "--isolated", "--no-slurm"]) == 0
    )
    assert "slurmctld" not in capsys.readouterr().out
    assert "[slurm]" not in (tmp_path / "n" / "config.toml").read_text()


def test_a_single_address_takes_its_whole_24() -> None:
    others = _lines(list(SUBNET_POOL.subnets(new_prefix=24))[1:])
    assert free_subnet(others) == "10.96.0.0/24"
    with pytest.raises(IsolationError):
        free_subnet(others + "9: tun0    inet 10.96.0.5/32 scope global tun0\n")
