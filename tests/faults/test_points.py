"""POINTS (sriovdra/faults.py) and the faults.point("...") calls in the code name the same points, once each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sriovdra import faults

pytestmark = pytest.mark.faults

PACKAGE = Path(faults.__file__).resolve().parent


def point_calls() -> list[tuple[str, str]]:
    """(name, where) of every faults.point(...) call in the package; a name that is not a literal is
    reported as such (the harness could not know it)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "point"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "faults"):
                arg = node.args[0] if node.args else None
                name = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "<not a literal>"
                out.append((name, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"))
    return out


def test_every_point_in_the_code_is_listed_and_every_listed_point_is_in_the_code():
    calls = point_calls()
    in_code = [name for name, _ in calls]
    unlisted = [f"{name} ({where})" for name, where in calls if name not in faults.NAMES]
    assert not unlisted, f"faults.point() calls missing from faults.POINTS: {unlisted}"
    assert not faults.NAMES - set(in_code), f"POINTS never reached in the code: {sorted(faults.NAMES - set(in_code))}"
    twice = sorted({n for n in in_code if in_code.count(n) > 1})
    assert not twice, f"fault points called in more than one place: {twice}"


def test_points_are_named_area_dot_where_and_say_why():
    names = [name for name, _ in faults.POINTS]
    assert len(names) == len(set(names)), "a point is listed twice"
    for name, why in faults.POINTS:
        area, _, where = name.partition(".")
        assert area and where and name == name.lower() and " " not in name, f"{name!r} is not <area>.<where>"
        assert why.strip(), f"{name}: no reason given"
