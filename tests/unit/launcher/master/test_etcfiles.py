"""The generated /etc files: passwd, group, hosts (content, order, hostile names)."""

from __future__ import annotations

from launcher.master.etcfiles import Account, Group, group, hosts, passwd

ROOT = Account("root", 0, 0, "root", "/root", "/bin/bash")
ALICE = Account("alice", 1001, 1001, "Alice A,,,", "/home/alice", "/bin/zsh")


def test_passwd_lists_root_and_the_user_sorted_by_uid() -> None:
    assert passwd([ALICE, ROOT]) == (
        b"root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001:Alice A,,,:/home/alice:/bin/zsh\n"
    )


def test_passwd_fields_cannot_add_fields_or_lines() -> None:
    evil = Account("mallory", 1002, 1002, "x:0:0:\nroot2:x:0:0::/:/bin/sh", "/home/m", "/bin/sh")
    text = passwd([evil]).decode()
    assert text.count("\n") == 1
    assert len(text.rstrip("\n").split(":")) == 7


def test_group_lists_the_user_as_the_only_member_of_its_supplementary_groups() -> None:
    groups = [Group("users", 100), Group("root", 0), Group("alice", 1001), Group("docker", 998)]
    assert group(groups, "alice", 1001) == (
        b"root:x:0:alice\nusers:x:100:alice\ndocker:x:998:alice\nalice:x:1001:\n"
    )


def test_group_of_a_root_job_lists_no_members() -> None:
    assert group([Group("root", 0)], None, None) == b"root:x:0:\n"


def test_hosts_has_localhost_the_master_and_each_node_with_an_address_sorted() -> None:
    text = hosts(
        ("10.77.0.1", "master.example.org"),
        [("node2", "10.77.0.12"), ("node1", "10.77.0.11"), ("node3", None)],
    ).decode()
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert "::1\tlocalhost ip6-localhost ip6-loopback" in lines
    assert lines[-3:] == [
        "10.77.0.1\tmaster.example.org master",
        "10.77.0.11\tnode1",
        "10.77.0.12\tnode2",
    ]
    assert "node3" not in text  # no address known


def test_hosts_leaves_out_names_and_addresses_that_could_inject_lines() -> None:
    text = hosts(
        ("10.0.0.1\n6.6.6.6 evil", "master"),
        [("bad name", "10.0.0.2"), ("ok\n1.2.3.4 evil", "10.0.0.3"), ("good", "not an ip")],
    ).decode()
    assert "evil" not in text and "bad" not in text and "good" not in text
    assert "master" not in text
    assert len(text.splitlines()) == 4  # the localhost lines alone


def test_hosts_without_a_master_address_lists_the_nodes() -> None:
    text = hosts(None, [("node1", "fd00::11")]).decode()
    assert text.splitlines()[-1] == "fd00::11\tnode1"
