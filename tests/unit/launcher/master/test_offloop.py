"""The master's event loop never opens a database transaction itself (issue 15).

Read from the source (ast) of ``launcher/master``: a ``with transaction(...)``
whose nearest enclosing function is an ``async def`` or a message handler
(``on_*``, ``datagram_received``) runs on the event loop, and so does a direct
call there of a function of the package that opens one (by name: one level, not
the whole call graph). Such work belongs in a database thread (:mod:`launcher.master.dbwork`:
``await db.read/write/run``, or a lane). A function or lambda nested in the
``async def`` and handed to a thread is fine: its body is not the coroutine's.
Failures name the place as ``file:line``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

MASTER = Path(__file__).resolve().parents[4] / "launcher" / "master"
Function = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
#: (file, function) that may: they run before any service listens.
BEFORE_SERVING = {("daemon.py", "_start")}
#: Synchronous functions called on the loop for each message or datagram.
HANDLERS = ("on_", "datagram_received")


def _own_nodes(function: Function) -> Iterator[ast.AST]:
    """The nodes of ``function``'s body, not those of functions nested in it."""
    todo: list[ast.AST] = list(ast.iter_child_nodes(function))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, Function):
            todo.extend(ast.iter_child_nodes(node))


def _opens_transaction(function: Function) -> int | None:
    """The line of a ``with transaction(...)`` of ``function``'s own body, if any."""
    for node in _own_nodes(function):
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and _name(call.func) == "transaction":
                    return node.lineno
    return None


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _trees() -> dict[str, ast.Module]:
    return {path.name: ast.parse(path.read_text(), str(path)) for path in MASTER.glob("*.py")}


def test_no_transaction_is_opened_on_the_event_loop() -> None:
    trees = _trees()
    functions = [
        (name, node)
        for name, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    opening = {f.name for _file, f in functions if _opens_transaction(f) is not None}
    found = []
    for file, function in functions:
        on_loop = isinstance(function, ast.AsyncFunctionDef) or function.name.startswith(HANDLERS)
        if not on_loop or (file, function.name) in BEFORE_SERVING:
            continue
        line = _opens_transaction(function)
        if line is not None:
            found.append(f"launcher/master/{file}:{line}: {function.name} opens a transaction")
        for node in _own_nodes(function):
            if isinstance(node, ast.Call) and _name(node.func) in opening:
                found.append(
                    f"launcher/master/{file}:{node.lineno}: {function.name} calls "
                    f"{_name(node.func)}, which opens a transaction"
                )
    assert not found, "database work on the event loop:\n" + "\n".join(sorted(found))


def test_the_check_finds_a_transaction_in_a_coroutine() -> None:
    tree = ast.parse(
        "async def bad(engine):\n"
        "    def fine():\n"
        "        with transaction(engine):\n"
        "            pass\n"
        "    with transaction(engine) as session:\n"
        "        pass\n"
    )
    bad = tree.body[0]
    assert isinstance(bad, ast.AsyncFunctionDef)
    assert _opens_transaction(bad) == 5
    fine = bad.body[0]
    assert isinstance(fine, ast.FunctionDef) and _opens_transaction(fine) == 3
