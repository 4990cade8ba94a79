"""The packages depend one way: cachefs <- bootsvc <- launcher, and no import cycle.

Read from the packages' own import statements (ast, every ``import`` and
``from ... import`` including those inside functions; ``if TYPE_CHECKING:``
blocks are skipped, they never run). ``cachefs`` may import neither ``launcher``
nor ``bootsvc``, ``bootsvc`` may not import ``launcher``, and no two modules of
the three packages may import each other, directly or round a longer loop (a
module importing its own parent package does not count: Python has that one
loaded already). Failures name the offending import as ``file:line``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cachefs", "bootsvc", "launcher")
#: package -> the packages it must not import.
FORBIDDEN = {"cachefs": ("launcher", "bootsvc"), "bootsvc": ("launcher",)}
#: (file, imported module) pairs allowed for now.


@dataclass(frozen=True)
class Import:
    """Module ``source`` (file ``path``, line ``line``) imports module ``target``."""

    source: str
    target: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def find_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root/PACKAGE``."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``nodes``, at any depth, but not under ``if TYPE_CHECKING``."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.orelse)
        else:
            yield from _statements(ast.iter_child_nodes(node))


def _named(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names ``node`` may load: for ``from X import a``, both ``X.a`` and ``X``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def find_imports(root: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of one module of ``modules`` by another (not of its own parents)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found: set[Import] = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _statements([tree]):
            for name in _named(node, module, path.name == "__init__.py"):
                target = resolve(name)
                if target is None or target == module or module.startswith(target + "."):
                    continue
                found.add(Import(module, target, str(path.relative_to(root)), node.lineno))
    return sorted(found, key=lambda i: (i.path, i.line, i.target))


def layer_violations(imports: list[Import]) -> list[Import]:
    """Imports of a package its package may not import (:data:`FORBIDDEN`)."""
    bad = []
    for imp in imports:
        below = FORBIDDEN.get(imp.source.split(".")[0], ())
        if imp.target.split(".")[0] in below:
            bad.append(imp)
    return bad


def cycles(imports: list[Import]) -> list[list[Import]]:
    """One loop of imports per strongly connected group of modules (Tarjan, iterative)."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            nxt = next(targets, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, {})))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return [_loop(edges, group) for group in groups]


def _loop(edges: dict[str, dict[str, Import]], group: set[str]) -> list[Import]:
    """A shortest loop through the first module of ``group`` (breadth-first)."""
    start = min(group)
    came: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, imp in sorted(edges.get(node, {}).items()):
                if target not in group or target in came:
                    continue
                came[target] = imp
                if target == start:
                    loop = [imp]
                    while loop[0].source != start:
                        loop.insert(0, came[loop[0].source])
                    return loop
                following.append(target)
        frontier = following
    raise AssertionError(f"no loop through {start} in {sorted(group)}")


def _show(found: list[Import]) -> str:
    return "\n".join(f"  {imp}" for imp in found)


# --- the tree itself ---


def test_lower_packages_do_not_import_higher_ones() -> None:
    imports = find_imports(REPO, find_modules(REPO))
    bad = layer_violations(imports)
    assert not bad, (
        "cachefs may not import launcher or bootsvc, bootsvc may not import launcher; "
        "move the code up or give the lower package what it needs:\n" + _show(bad)
    )


def test_no_import_cycle() -> None:
    loops = cycles(find_imports(REPO, find_modules(REPO)))
    assert not loops, "import cycles (put what both need in a third module):\n" + "\n".join(
        _show(loop) for loop in loops
    )


# --- the checker, on a tree made to break both rules ---


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_a_bad_layer_and_a_cycle(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "cachefs/__init__.py": "",
            "cachefs/store.py": "import os\n\nimport launcher.jobs\n",
            "bootsvc/__init__.py": "",
            "bootsvc/tftp.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from launcher import wire\n"  # never runs: not counted
                "def serve() -> None:\n"
                "    from launcher.wire import Message\n"  # inside a function: counted
            ),
            "launcher/__init__.py": "",
            "launcher/wire.py": "import cachefs\nfrom launcher import jobs\n",
            "launcher/jobs.py": "def run() -> None:\n    from . import wire\n",
            "launcher/sub/__init__.py": "import launcher\n",  # its own parent: not counted
            "launcher/sub/tool.py": "from .. import jobs\n",
        },
    )
    imports = find_imports(tmp_path, find_modules(tmp_path))

    assert [str(i) for i in layer_violations(imports)] == [
        "bootsvc/tftp.py:5: bootsvc.tftp imports launcher.wire",
        "cachefs/store.py:3: cachefs.store imports launcher.jobs",
    ]
    loops = cycles(imports)
    assert [[str(i) for i in loop] for loop in loops] == [
        [
            "launcher/jobs.py:2: launcher.jobs imports launcher.wire",
            "launcher/wire.py:2: launcher.wire imports launcher.jobs",
        ]
    ]
    # A relative import two levels up resolves to the package's module.
    assert Import("launcher.sub.tool", "launcher.jobs", "launcher/sub/tool.py", 1) in imports
    assert not any(i.source == "launcher.sub" for i in imports)


def test_checker_finds_a_longer_loop(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "launcher/__init__.py": "",
            "launcher/a.py": "import launcher.b\n",
            "launcher/b.py": "from launcher import c\n",
            "launcher/c.py": "\n\nfrom launcher.a import thing\n",
            "launcher/d.py": "import launcher.a\n",  # leads in, is not in the loop
        },
    )
    loops = cycles(find_imports(tmp_path, find_modules(tmp_path, ("launcher",))))
    assert [[str(i) for i in loop] for loop in loops] == [
        [
            "launcher/a.py:1: launcher.a imports launcher.b",
            "launcher/b.py:1: launcher.b imports launcher.c",
            "launcher/c.py:3: launcher.c imports launcher.a",
        ]
    ]
