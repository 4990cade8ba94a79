"""The /etc files the master writes for each job: passwd, group and hosts.

Pure functions of what they are given (no lookups here), so the same user on
the same cluster gets the same bytes, hence the same manifest id, every time
(the node's root pool reuses a root by id). Lines are sorted: by uid, gid, and
node name.

Privacy: passwd lists root and the job's user only, and group lists the job's
user as the only member, so a job does not learn the other users' names
(docs/execution.md, "/etc from the master").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: A host name for /etc/hosts: labels of letters, digits, '-' and '_' joined by
#: dots (RFC 1123, plus the '_' some sites use). Anything else (a space, a
#: newline, '#') could add lines or aliases: such a name is left out.
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*")
#: A passwd or group field: no ':' (the separator) and no newline.
_FIELD_BAD = re.compile(r"[:\n\r\0]")

#: The lines every /etc/hosts starts with (Debian's).
LOCALHOST = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)


@dataclass(frozen=True)
class Account:
    """One passwd line's fields (``pwd.struct_passwd`` has them all)."""

    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


@dataclass(frozen=True)
class Group:
    """One group line's name and gid (members are decided here)."""

    name: str
    gid: int


def _field(value: str) -> str:
    """``value`` made safe for a colon-separated line: a ':' or newline in a GECOS
    or path would add fields or lines, so they become spaces."""
    return _FIELD_BAD.sub(" ", value)


def passwd(accounts: Iterable[Account]) -> bytes:
    """An /etc/passwd of ``accounts`` (root and the job's user), one per uid,
    sorted by uid; the password field is 'x' (no shadow file is shipped)."""
    by_uid = {a.uid: a for a in accounts}
    lines = [
        ":".join(
            (
                _field(a.name),
                "x",
                str(a.uid),
                str(a.gid),
                _field(a.gecos),
                _field(a.home),
                _field(a.shell),
            )
        )
        for _, a in sorted(by_uid.items())
    ]
    return "".join(f"{line}\n" for line in lines).encode()


def group(groups: Iterable[Group], user: str | None, user_gid: int | None) -> bytes:
    """An /etc/group of ``groups``, sorted by gid. ``user`` is listed as the only
    member of each of them but its primary group ``user_gid`` (membership of
    that one comes from passwd, as on Debian); None lists no members."""
    by_gid = {g.gid: g for g in groups}
    lines = []
    for gid, g in sorted(by_gid.items()):
        members = _field(user) if user is not None and gid != user_gid else ""
        lines.append(f"{_field(g.name)}:x:{gid}:{members}")
    return "".join(f"{line}\n" for line in lines).encode()


def host_name(name: str | None) -> str | None:
    """``name`` if it may stand in /etc/hosts, else None."""
    if name is None or len(name) > 253 or _HOSTNAME.fullmatch(name) is None:
        return None
    return name


def host_address(address: str | None) -> str | None:
    """``address`` normalised if it is an IP address, else None."""
    if address is None:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def hosts(master: tuple[str, str] | None, nodes: Sequence[tuple[str, str | None]]) -> bytes:
    """An /etc/hosts: the localhost lines, the master (address, name; its short
    name too when the name has dots), then each node with a known address,
    sorted by name. A node with no address, a name that is not a host name, or
    an address that is not an IP address is left out."""
    lines = [f"{address}\t{names}" for address, names in LOCALHOST]
    if master is not None:
        address, name = host_address(master[0]), host_name(master[1])
        if address is not None and name is not None:
            short = name.split(".", 1)[0]
            lines.append(f"{address}\t{name}" + (f" {short}" if short != name else ""))
    seen: set[str] = set()
    for name, address in sorted(nodes, key=lambda n: n[0]):
        checked, where = host_name(name), host_address(address)
        if checked is None or where is None or checked in seen:
            continue
        seen.add(checked)
        lines.append(f"{where}\t{checked}")
    return "".join(f"{line}\n" for line in lines).encode()
