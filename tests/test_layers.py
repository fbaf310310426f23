"""The package layering written down in ``node/__init__.py``, checked on every import.

Every ``import`` statement counts: module level, inside functions and under
``TYPE_CHECKING``, because a function-level import is still a dependency. A unit is a
top-level package (``consensus``, ``fl``) or a first-level part of ``node`` (``node.p2p``,
``node.daemon``); ``node`` itself only carries ``__version__`` and may be imported by any
part of it.

A second rule keeps protocol modules honest: no module of ``node.p2p`` touches a private
member (``_name``) of an object defined in another module. The host is reached through its
public interface only, so a protocol can be read, tested and replaced on its own. A third
keeps that interface from hiding a cycle: ``node.p2p`` modules import each other at module
level only (not under ``TYPE_CHECKING``, not inside a function), and those imports form no
cycle, so every module imports on its own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("node", "consensus", "fl")

# unit -> the units it may import (besides itself and the bare ``node`` package).
ALLOWED: dict[str, set[str]] = {
    "node.core": set(),
    "consensus": {"node.core"},
    "fl": {"node.core"},
    "node.p2p": {"node.core"},
    "node.ledger": {"node.core", "consensus", "fl"},
    "node.store": {"node.core", "node.ledger", "consensus", "fl"},
    "node.app": {"node.core", "node.ledger", "node.store", "consensus", "fl"},
    "node.config": {"node.core", "node.p2p"},
    "node.home": {"node.core", "node.config", "node.ledger", "node.p2p", "consensus", "fl"},
    "node.services": {
        "node.core",
        "node.ledger",
        "node.store",
        "node.app",
        "node.p2p",
        "node.config",
        "consensus",
        "fl",
    },
    "node.rpc": {"node.core", "node.ledger", "node.store", "node.app", "node.services"}
    | {"node.config", "consensus", "fl"},
    "node.testnet": {"node.core", "node.config", "node.home", "node.ledger", "node.rpc"},
    "node.daemon": {
        "node.core",
        "node.ledger",
        "node.store",
        "node.app",
        "node.p2p",
        "node.config",
        "node.home",
        "node.services",
        "node.rpc",
        "node.testnet",
        "consensus",
        "fl",
    },
    "node.cli": {
        "node.core",
        "node.ledger",
        "node.store",
        "node.app",
        "node.p2p",
        "node.config",
        "node.home",
        "node.services",
        "node.rpc",
        "node.testnet",
        "node.daemon",
        "consensus",
        "fl",
    },
}

# (importing module, imported module) pairs that break the layering today and are being
# removed; each must still exist, so a fixed one has to leave this list.
KNOWN_IMPORT_EXCEPTIONS: set[tuple[str, str]] = set()
# (module, dotted attribute expression) pairs of node.p2p that reach into another module's
# private members today; same rule.
KNOWN_PRIVATE_EXCEPTIONS: set[tuple[str, str]] = set()


def _modules() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name.endswith("_pb2.py"):
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def unit_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "node" and len(parts) > 1 else parts[0]


def imports_of(tree: ast.AST) -> Iterator[str]:
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            yield n.module
        elif isinstance(n, ast.Import):
            yield from (a.name for a in n.names)


def layer_violations(module: str, tree: ast.AST) -> Iterator[tuple[str, str]]:
    src = unit_of(module)
    allowed = ALLOWED.get(src)
    for target in imports_of(tree):
        if target.split(".")[0] not in PACKAGES or target == "node":
            continue
        dst = unit_of(target)
        if dst == src:
            continue
        if allowed is None or dst not in allowed:
            yield module, target


def _defined_privates(tree: ast.AST) -> set[str]:
    """Private names a module defines: methods, class attributes and ``self._x`` stores."""
    names: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            names.add(n.attr)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
    return {x for x in names if x.startswith("_")}


def private_reaches(module: str, tree: ast.AST) -> Iterator[tuple[str, str]]:
    """``obj._x`` where ``obj`` is not self/cls and this module defines no ``_x``."""
    own = _defined_privates(tree)
    for n in ast.walk(tree):
        if not isinstance(n, ast.Attribute):
            continue
        if not n.attr.startswith("_") or n.attr.startswith("__"):
            continue
        if isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"):
            continue
        if n.attr in own:
            continue
        yield module, ast.unparse(n)


def _p2p_targets(node: ast.Import | ast.ImportFrom, modules: set[str]) -> Iterator[str]:
    """The ``node.p2p`` modules an import statement loads (``from node.p2p import ping``
    loads ``node.p2p.ping``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.module and node.level == 0:
        subs = [f"{node.module}.{a.name}" for a in node.names]
        names = [sub if sub in modules else node.module for sub in subs]
    else:
        names = []
    yield from (n for n in names if n == "node.p2p" or n.startswith("node.p2p."))


def deferred_p2p_imports(tree: ast.Module, modules: set[str]) -> Iterator[str]:
    """``node.p2p`` imports not made at module level: under ``if TYPE_CHECKING:`` or inside
    a function, the usual ways to hide an import cycle."""
    top = {id(n) for n in tree.body}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in top:
            yield from _p2p_targets(n, modules)


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None when it has none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done and (found := visit(nxt)):
                return found
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done and (found := visit(node)):
            return found
    return None


def p2p_import_graph(parsed: dict[str, ast.Module]) -> dict[str, set[str]]:
    modules = set(parsed)
    return {
        m: {
            t
            for n in tree.body
            if isinstance(n, ast.Import | ast.ImportFrom)
            for t in _p2p_targets(n, modules)
        }
        - {m}
        for m, tree in parsed.items()
    }


def _parsed() -> list[tuple[str, ast.Module]]:
    return [(m, ast.parse(p.read_text(), str(p))) for m, p in _modules()]


def test_every_unit_has_a_rule() -> None:
    units = {unit_of(m) for m, _ in _modules()} - {"node"}
    assert units <= set(ALLOWED), f"add a layering rule for {sorted(units - set(ALLOWED))}"


def test_imports_follow_the_layers() -> None:
    found = {v for m, t in _parsed() for v in layer_violations(m, t)}
    new = found - KNOWN_IMPORT_EXCEPTIONS
    assert not new, "imports against the layering (see node/__init__.py):\n" + "\n".join(
        f"  {a} imports {b}" for a, b in sorted(new)
    )
    stale = KNOWN_IMPORT_EXCEPTIONS - found
    assert not stale, f"fixed, remove from KNOWN_IMPORT_EXCEPTIONS: {sorted(stale)}"


def test_p2p_modules_use_only_public_members_of_other_modules() -> None:
    found = {v for m, t in _parsed() if m.startswith("node.p2p") for v in private_reaches(m, t)}
    new = found - KNOWN_PRIVATE_EXCEPTIONS
    assert not new, "private members reached from another module:\n" + "\n".join(
        f"  {a}: {b}" for a, b in sorted(new)
    )
    stale = KNOWN_PRIVATE_EXCEPTIONS - found
    assert not stale, f"fixed, remove from KNOWN_PRIVATE_EXCEPTIONS: {sorted(stale)}"


def test_p2p_modules_import_each_other_at_module_level_and_without_a_cycle() -> None:
    parsed = {m: t for m, t in _parsed() if m.startswith("node.p2p")}
    deferred = sorted(
        (m, t) for m, tree in parsed.items() for t in deferred_p2p_imports(tree, set(parsed))
    )
    assert not deferred, "p2p imports hidden under TYPE_CHECKING or in a function:\n" + "\n".join(
        f"  {a} imports {b}" for a, b in deferred
    )
    cycle = import_cycle(p2p_import_graph(parsed))
    assert cycle is None, "p2p import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("node.core.codec", "from node.daemon import Daemon", ("node.core.codec", "node.daemon")),
        ("fl.aggregate", "def f():\n    import node.p2p.host", ("fl.aggregate", "node.p2p.host")),
        (
            "consensus.engine",
            "if TYPE_CHECKING:\n    from node.app.application import NodeApp",
            ("consensus.engine", "node.app.application"),
        ),
        ("node.services.x", "from node.daemon import Daemon", ("node.services.x", "node.daemon")),
    ],
)
def test_the_import_rule_catches(module: str, source: str, expected: tuple[str, str]) -> None:
    assert list(layer_violations(module, ast.parse(source))) == [expected]


def test_the_private_member_rule_catches_a_protocol_reaching_into_the_host() -> None:
    src = "class Identify:\n    def run(self, host):\n        host._peers.clear()\n"
    assert list(private_reaches("node.p2p.identify", ast.parse(src))) == [
        ("node.p2p.identify", "host._peers")
    ]
    # its own private state is its business
    own = (
        "class A:\n    def __init__(self):\n        self._x = 1\n"
        "    def f(self, o):\n        o._x\n"
    )
    assert list(private_reaches("node.p2p.a", ast.parse(own))) == []


def test_the_p2p_import_rules_catch_a_hidden_import_and_a_cycle() -> None:
    modules = {"node.p2p", "node.p2p.host", "node.p2p.ping"}
    hidden = (
        "if TYPE_CHECKING:\n    from node.p2p.host import Host\n"
        "def f():\n    import node.p2p.ping\n"
    )
    assert list(deferred_p2p_imports(ast.parse(hidden), modules)) == [
        "node.p2p.host",
        "node.p2p.ping",
    ]
    parsed = {
        "node.p2p.host": ast.parse("from node.p2p import ping"),
        "node.p2p.ping": ast.parse("from node.p2p.host import Host"),
    }
    assert import_cycle(p2p_import_graph(parsed)) == [
        "node.p2p.host",
        "node.p2p.ping",
        "node.p2p.host",
    ]
    assert import_cycle({"a": {"b"}, "b": set()}) is None
