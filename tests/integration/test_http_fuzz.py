"""Fuzzing the master's HTTP handlers (issue 12): the user socket, the object
service and the boot service of a real master process, sent requests of any
shape over their real sockets. Every request is answered, below 500, and the
master's log never shows an unhandled exception ("Error handling request", a
traceback)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests import fuzzing
from tests.integration.masterproc import WAIT_S, Master, running_boot_service, running_master
from tests.unit.cachefs.test_manifest_fuzz import documents as manifest_documents

BAD_LOG = ("Traceback", "Error handling request", "Unhandled exception")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs a master (root)")


@pytest.fixture(scope="module")
def master() -> Iterator[Master]:
    with running_master() as m:
        yield m


@pytest.fixture(scope="module")
def boot(master: Master) -> Iterator[Master]:
    """The master's boot HTTP service (it listens only with [boot]: run on its own)."""
    with running_boot_service(master):
        master.new_log()  # its start-up lines are not the fuzzer's
        yield master


def exchange(connect: Callable[[], socket.socket], raw: bytes) -> int | None:
    """Send ``raw`` (one request asking to close), read to the end; the answer's status."""
    with connect() as s:
        s.settimeout(WAIT_S)
        # answered and closed before the whole body went: read the answer
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(raw)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    first = data.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[0].startswith(b"HTTP/") else None


def check(m: Master, connect: Callable[[], socket.socket], raw: bytes) -> None:
    status = exchange(connect, raw)
    log = m.new_log()
    errors = [line for line in log.splitlines() if "Error" in line or "error" in line]
    assert not any(bad in log for bad in BAD_LOG), (raw[:200], errors[-4:])
    assert status is not None and status < 500, (status, raw[:300])


# --- requests ------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
DEEP = b"[" * 100_000 + b"]" * 100_000
ids = st.integers(0, 2**80).map(str) | st.sampled_from(["9" * 5000, "01", "1"])
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "application/json; charset=nope",
        "text/plain",
        "multipart/form-data; boundary=x",
    ]
)
junk_paths = st.text(max_size=20).map(lambda t: "/" + urllib.parse.quote(t, safe="/%"))


def request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: fuzz", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


@st.composite
def requests(
    draw: st.DrawFn,
    routes: st.SearchStrategy[tuple[str, str]],
    bodies: st.SearchStrategy[bytes],
    headers: st.SearchStrategy[dict[str, str]],
) -> bytes:
    if draw(st.integers(0, 29)) == 0:
        # not HTTP at all (blank lines alone are no request: the head timeout closes them)
        return draw(st.binary(min_size=1, max_size=200).filter(bytes.strip)) + b"\r\n\r\n"
    method, path = draw(routes)
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "GET"]))
    if draw(st.integers(0, 9)) == 0:
        path = draw(junk_paths)
    if draw(st.integers(0, 4)) == 0:
        path += "?" + urllib.parse.urlencode(
            draw(
                st.dictionaries(st.sampled_from(["all", "x", ""]), st.text(max_size=5), max_size=2)
            )
        )
    h = draw(headers)
    ctype = draw(content_types)
    if ctype is not None:
        h["Content-Type"] = ctype
    return request(method, path, draw(bodies), h, chunked=draw(st.integers(0, 9)) == 0)


def json_body(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return (
        values.map(lambda v: json.dumps(v).encode())
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=100)
    )


# --- the user socket -----------------------------------------------------------


@st.composite
def submissions(draw: st.DrawFn) -> Any:
    good: dict[str, st.SearchStrategy[Any]] = {
        "argv": st.lists(st.text(max_size=8), max_size=3),
        "env": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        "cwd": st.sampled_from(["/tmp", "tmp", "/a\0b"]),
        "nodes": st.integers(-1, 3),
        "tasks": st.integers(-1, 5),
        "batch": st.booleans(),
        "output": st.sampled_from(["out-%j", "%q", "/x/%4t.%n", "%"]),
        "error": st.none() | st.text(max_size=6),
        "label": st.booleans(),
        "manifest": manifest_documents(),
    }
    doc = {k: draw(v) for k, v in good.items() if draw(st.integers(0, 9)) > 0}
    for _ in range(draw(st.integers(0, 2))):
        doc[draw(st.sampled_from(sorted(good)))] = draw(json_values)
    if draw(st.integers(0, 3)) == 0:
        doc["manifest"] = {"manifest": doc.get("manifest")}  # POST /manifests shape
        return doc["manifest"]
    return doc


user_routes = st.one_of(
    st.sampled_from([("POST", "/jobs"), ("POST", "/manifests"), ("GET", "/jobs")]),
    st.sampled_from([("GET", "/nodes"), ("GET", "/ps"), ("GET", "/jobs?all=1")]),
    st.tuples(
        st.sampled_from(["GET", "POST"]),
        st.builds(
            lambda i, tail: f"/jobs/{i}/{tail}",
            ids,
            st.sampled_from(["events", "stream", "signal"]),
        ),
    ),
)
user_headers = st.fixed_dictionaries(
    {},
    optional={
        "Upgrade": st.just("websocket"),
        "Sec-WebSocket-Key": st.just("dGhlIHNhbXBsZSBub25jZQ=="),
        "Sec-WebSocket-Version": st.just("13"),
        "Expect": st.sampled_from(["100-continue", "x"]),
        "Accept-Encoding": st.sampled_from(["gzip", "br", "*"]),
    },
)
user_requests = requests(
    user_routes,
    json_body(submissions() | st.fixed_dictionaries({"signum": json_values})),
    user_headers,
)


@given(raw=user_requests)
@example(raw=request("POST", "/jobs", DEEP, {"Content-Type": "application/json"}))
@example(raw=request("POST", "/manifests", DEEP))
@example(raw=request("GET", "/jobs/" + "9" * 30 + "/events"))
@example(raw=request("GET", "/jobs/" + "9" * 5000 + "/events"))
@example(
    raw=request("POST", "/jobs", b'{"argv": 1}', {"Content-Type": "application/json; charset=nope"})
)
@fuzzing.quick()
def test_user_socket_quick(master: Master, raw: bytes) -> None:
    check(master, master.unix, raw)


@pytest.mark.slow
@given(raw=user_requests)
@fuzzing.full()
def test_user_socket_full(master: Master, raw: bytes) -> None:
    check(master, master.unix, raw)


# --- the object service --------------------------------------------------------


def _object_routes(m: Master) -> st.SearchStrategy[tuple[str, str]]:
    names = st.sampled_from([m.digest, "0" * 64, m.digest.upper(), ".."]) | st.text(max_size=70)
    return st.one_of(
        st.tuples(
            st.sampled_from(["GET", "HEAD"]),
            names.map(lambda n: "/objects/" + urllib.parse.quote(n)),
        ),
        st.just(("POST", "/objects/batch")),
    )


digits = st.integers(0, 2000).map(str) | st.sampled_from(["", "9" * 30, "9" * 5000])


def _object_headers(m: Master) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries(
        {
            "Authorization": st.sampled_from(
                [f"Bearer {m.capability}"] * 8
                + ["Bearer x", "Basic x", "", f"bearer  {m.capability} ", f"Bearer {m.secret}"]
            )
        },
        optional={
            "Range": st.builds(lambda a, b: f"bytes={a}-{b}", digits, digits)
            | st.text(max_size=12),
            "If-Range": st.sampled_from([f'"{m.digest}"', "x", 'W/"a"']),
            "If-None-Match": st.sampled_from([f'"{m.digest}"', "*", "x, y", '"a", W/"b"', '"']),
            "Beolaunch-Job": st.sampled_from(["1", "x", "9" * 30]),
        },
    )


def _batch_bodies(m: Master) -> st.SearchStrategy[bytes]:
    wanted = st.lists(st.sampled_from([m.digest, "0" * 64]) | json_values, max_size=5)
    doc = st.fixed_dictionaries(
        {"objects": wanted},
        optional={"max_size": st.sampled_from([None, 0, 10, -1, True, 2**70]) | json_values},
    )
    return json_body(doc)


def check_objects(m: Master, data: st.DataObject) -> None:
    raw = data.draw(requests(_object_routes(m), _batch_bodies(m), _object_headers(m)))
    check(m, m.tcp("objects"), raw)


@given(data=st.data())
@fuzzing.quick()
def test_object_service_quick(master: Master, data: st.DataObject) -> None:
    check_objects(master, data)


def test_object_service_examples(master: Master) -> None:
    """Requests the fuzzer found (or the probe of issue 12), kept."""
    auth = {"Authorization": f"Bearer {master.capability}"}
    for raw in (
        request("POST", "/objects/batch", DEEP, auth),
        request(
            "GET", f"/objects/{master.digest}", b"", {**auth, "Range": "bytes=0-" + "9" * 5000}
        ),
        request(
            "GET", f"/objects/{master.digest}", b"", {**auth, "Range": "bytes=" + "9" * 5000 + "-"}
        ),
        request("GET", f"/objects/{master.digest}", b"", {**auth, "Range": "bytes=-" + "9" * 5000}),
    ):
        check(master, master.tcp("objects"), raw)


@pytest.mark.slow
@given(data=st.data())
@fuzzing.full()
def test_object_service_full(master: Master, data: st.DataObject) -> None:
    check_objects(master, data)


# --- the boot service ----------------------------------------------------------

macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda b: "-".join(f"{x:02x}" for x in b)
) | st.text(max_size=20)
boot_routes = st.one_of(
    st.tuples(st.just("GET"), macs.map(lambda m: "/boot/" + urllib.parse.quote(m) + ".ipxe")),
    st.tuples(
        st.just("GET"), st.text(max_size=70).map(lambda s: "/boot/images/" + urllib.parse.quote(s))
    ),
    st.just(("POST", "/boot/enroll")),
    st.tuples(st.just("GET"), junk_paths.map(lambda p: "/boot" + p)),
)
boot_requests = requests(
    boot_routes,
    json_body(st.fixed_dictionaries({}, optional={"ticket": json_values | st.text(max_size=64)})),
    st.just({}),
)


@given(raw=boot_requests)
@example(raw=request("POST", "/boot/enroll", DEEP, {"Content-Type": "application/json"}))
@example(
    raw=request(
        "POST",
        "/boot/enroll",
        b'{"ticket": "x"}',
        {"Content-Type": "application/json; charset=nope"},
    )
)
@example(raw=request("GET", "/boot/images/" + "a" * 64 + "%0A"))
@fuzzing.quick()
def test_boot_service_quick(boot: Master, raw: bytes) -> None:
    check(boot, boot.tcp("boot_http"), raw)


@pytest.mark.slow
@given(raw=boot_requests)
@fuzzing.full()
def test_boot_service_full(boot: Master, raw: bytes) -> None:
    check(boot, boot.tcp("boot_http"), raw)
