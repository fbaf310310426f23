"""Tests that cannot fail are worse than none: they look like coverage.

Two shapes are rejected in every test module:

- a ``raise`` statement directly inside a ``with pytest.raises(...)`` block: the test
  raises the expected error itself, so it passes whatever the code under test does;
- ``or`` at the top of an ``assert``: ``assert a or b`` passes when either side holds, and
  where one side is what the test meant, the other is usually true by construction.
  Write two asserts, or assert the exact expected value.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _is_pytest_raises(item: ast.withitem) -> bool:
    call = item.context_expr
    if not isinstance(call, ast.Call):
        return False
    f = call.func
    return (
        isinstance(f, ast.Attribute)
        and f.attr == "raises"
        and (isinstance(f.value, ast.Name) and f.value.id == "pytest")
    )


def _raises_inside(body: list[ast.stmt]) -> Iterator[ast.Raise]:
    """``raise`` statements a with-block runs itself (not inside a nested def or class)."""
    stack = list(body)
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Raise):
            yield n
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        stack.extend(c for c in ast.iter_child_nodes(n) if isinstance(c, ast.stmt))


def problems(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for n in ast.walk(tree):
        if isinstance(n, ast.With | ast.AsyncWith) and any(_is_pytest_raises(i) for i in n.items):
            for r in _raises_inside(n.body):
                yield r.lineno, "raise inside its own pytest.raises"
        if isinstance(n, ast.Assert):
            t = n.test
            if isinstance(t, ast.BoolOp) and isinstance(t.op, ast.Or):
                yield n.lineno, "assert with a top-level 'or'"


def test_no_test_can_pass_by_construction() -> None:
    found = [
        f"{p.relative_to(TESTS.parent)}:{line}: {what}"
        for p in sorted(TESTS.rglob("*.py"))
        for line, what in problems(ast.parse(p.read_text(), str(p)))
    ]
    assert not found, "tests that cannot fail:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "count"),
    [
        ("with pytest.raises(E):\n    raise E()\n", 1),
        ("with pytest.raises(E):\n    if x:\n        raise E()\n", 1),
        ("with pytest.raises(E):\n    f()\n", 0),
        ("with pytest.raises(E):\n    def g():\n        raise E()\n    g2()\n", 0),
        ("assert a or b\n", 1),
        ("assert (a or b) and c\n", 0),
        ("assert a == b\n", 0),
    ],
)
def test_the_lint_sees(source: str, count: int) -> None:
    assert len(list(problems(ast.parse(source)))) == count
